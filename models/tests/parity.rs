//! The ONNX backends against the goldens the export tool computed with PyTorch for the
//! tiny fixtures, and batching against one-by-one runs.
mod common;

use common::{fixture, golden_question, goldens, ids, ort_available};
use tsst_backend::{ExpandRequest, PolicyBackend, ScoreRequest, ValueBackend};
use tsst_messages::{DataSource, Question, StepDelimiter};
use tsst_models::{preprocess, Device, Manifest, OnnxPolicy, OnnxValue};

fn policy() -> OnnxPolicy {
    OnnxPolicy::load(&fixture("tiny-policy"), Device::Cpu, None).unwrap()
}

fn value() -> OnnxValue {
    OnnxValue::load(&fixture("tiny-value"), Device::Cpu, None).unwrap()
}

fn request<'a>(
    q: &'a Question,
    prefix: &'a str,
    seeds: &'a [u64],
    temperature: f64,
) -> ExpandRequest<'a> {
    ExpandRequest {
        question: q,
        prefix,
        seeds,
        temperature,
        max_new_tokens: 12,
        // The golden continuation has no "Step k:" marker: it runs the full 12 tokens.
        delimiter: Some(StepDelimiter::StepMarker),
    }
}

fn text_only() -> Question {
    Question {
        id: "text".into(),
        source: DataSource::Scienceqa,
        image: None,
        question: "Which is a mammal?".into(),
        choices: vec!["shark".into(), "whale".into()],
        answer: 1,
        rationales: vec![],
        context: Some("Whales breathe air.".into()),
    }
}

#[test]
fn pixel_values_match_the_golden_checksum() {
    let dir = fixture("tiny-policy");
    let g = goldens("tiny-policy");
    let m = Manifest::load(&dir).unwrap();
    let px = preprocess::load(&dir.join(g["image"].as_str().unwrap()), &m.vision).unwrap();
    let golden = &g["pixel_values"];
    assert_eq!(px.len(), 3 * 56 * 56);
    let sum: f64 = px.iter().map(|&v| f64::from(v)).sum();
    let want = golden["sum"].as_f64().unwrap();
    assert!(
        (sum - want).abs() < 1e-4 * want.abs().max(1.0),
        "sum {sum} vs {want}"
    );
    let abs: f64 = px.iter().map(|&v| f64::from(v).abs()).sum();
    let want_abs = golden["abs_sum"].as_f64().unwrap();
    assert!(
        (abs - want_abs).abs() < 1e-4 * want_abs,
        "abs sum {abs} vs {want_abs}"
    );
    for (i, w) in golden["first8"].as_array().unwrap().iter().enumerate() {
        assert!(
            (f64::from(px[i]) - w.as_f64().unwrap()).abs() < 1e-4,
            "value {i}"
        );
    }
}

#[test]
fn prompt_ids_match_the_golden() {
    if !ort_available() {
        return;
    }
    let dir = fixture("tiny-value");
    let g = goldens("tiny-value");
    let q = golden_question(&g, &dir);
    let mut p = policy();
    assert_eq!(p.prompt_ids(&q, "").unwrap(), ids(&g["prompt_ids"]));
    for case in g["value"].as_array().unwrap() {
        let partial = case["partial"].as_str().unwrap();
        assert_eq!(
            tsst_labels::conversation(&q, partial),
            case["prompt"].as_str().unwrap()
        );
        assert_eq!(
            p.prompt_ids(&q, partial).unwrap(),
            ids(&case["prompt_ids"]),
            "{partial:?}"
        );
    }
}

#[test]
fn greedy_tokens_match_the_golden() {
    if !ort_available() {
        return;
    }
    let dir = fixture("tiny-policy");
    let g = goldens("tiny-policy");
    let q = golden_question(&g, &dir);
    let mut p = policy();
    let out = p.generate(&[request(&q, "", &[1, 2], 0.0)]).unwrap();
    let samples = out[0].as_ref().unwrap();
    let want = ids(&g["greedy"]["ids"]);
    assert_eq!(samples.len(), 2);
    for s in samples {
        assert_eq!(s.ids, want);
        assert_eq!(s.sample.tokens, 12);
        assert!(s.sample.logprob < 0.0 && s.sample.logprob.is_finite());
    }
    assert_eq!(samples[0], samples[1], "greedy ignores the seed");
}

#[test]
fn a_mixed_batch_generates_what_single_requests_do() {
    if !ort_available() {
        return;
    }
    let dir = fixture("tiny-policy");
    let g = goldens("tiny-policy");
    let q = golden_question(&g, &dir);
    let t = text_only();
    let seeds: [&[u64]; 4] = [&[1, 2, 3], &[4], &[5, 6], &[7, 8]];
    let batch = vec![
        request(&q, "", seeds[0], 0.0),
        request(&q, "Step 1: I see shapes.", seeds[1], 0.0),
        request(&t, "", seeds[2], 1.0),
        request(
            &q,
            "Step 1: I see three shapes of different colours.",
            seeds[3],
            0.7,
        ),
    ];
    let mut p = policy();
    let together = p.generate(&batch).unwrap();
    for (i, req) in batch.iter().enumerate() {
        let alone = p.generate(std::slice::from_ref(req)).unwrap();
        let (a, b) = (alone[0].as_ref().unwrap(), together[i].as_ref().unwrap());
        assert_eq!(a.len(), req.seeds.len());
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x.ids, y.ids, "request {i}");
            assert_eq!(x.sample.text, y.sample.text);
            assert!((x.sample.logprob - y.sample.logprob).abs() < 1e-4);
        }
    }
    let golden = ids(&g["greedy"]["ids"]);
    assert_eq!(together[0].as_ref().unwrap()[0].ids, golden);
    // Different seeds at a positive temperature draw different continuations.
    let sampled = together[2].as_ref().unwrap();
    assert_ne!(sampled[0].ids, sampled[1].ids);
}

#[test]
fn a_batch_split_by_the_cache_budget_generates_the_same() {
    if !ort_available() {
        return;
    }
    let dir = fixture("tiny-policy");
    let g = goldens("tiny-policy");
    let q = golden_question(&g, &dir);
    let t = text_only();
    let seeds: Vec<Vec<u64>> = (0..6).map(|k| vec![k, k + 10, k + 20]).collect();
    let prefixes: Vec<String> = (0..6)
        .map(|k| "Step 1: I see a shape. ".repeat(k))
        .collect();
    let batch: Vec<ExpandRequest> = (0..6)
        .map(|k| {
            let question = if k % 2 == 0 { &q } else { &t };
            request(question, &prefixes[k], &seeds[k], 0.8)
        })
        .collect();
    let mut p = policy();
    let budget = p.kv_budget();
    assert!(budget.per_position > 0 && budget.limit > 0);
    let together = p.generate(&batch).unwrap();
    // Room for about two requests at a time: three or more parts.
    let one = budget.per_position * 2 * 3 * 400;
    p.set_kv_budget(2 * one);
    let parts = p.generate(&batch).unwrap();
    // Less than any one request: each alone.
    p.set_kv_budget(1);
    let alone = p.generate(&batch).unwrap();
    for (i, ((a, b), c)) in together.iter().zip(&parts).zip(&alone).enumerate() {
        let (a, b, c) = (
            a.as_ref().unwrap(),
            b.as_ref().unwrap(),
            c.as_ref().unwrap(),
        );
        for ((x, y), z) in a.iter().zip(b).zip(c) {
            assert_eq!(x.ids, y.ids, "request {i} in parts");
            assert_eq!(x.ids, z.ids, "request {i} alone");
        }
    }
}

/// Eight samples at temperature 1 from the root of the text-only question.
fn eight_samples(
    p: &mut OnnxPolicy,
    delimiter: Option<StepDelimiter>,
    max_new_tokens: u32,
) -> Vec<tsst_models::policy::Generated> {
    let t = text_only();
    let seeds: Vec<u64> = (0..8).collect();
    let req = ExpandRequest {
        question: &t,
        prefix: "",
        seeds: &seeds,
        temperature: 1.0,
        max_new_tokens,
        delimiter,
    };
    p.generate(&[req]).unwrap().remove(0).unwrap()
}

#[test]
fn steps_end_at_the_delimiter() {
    if !ort_available() {
        return;
    }
    let mut p = policy();
    let eos = p.model().manifest.special_tokens.eos;
    for (delimiter, mark) in [(StepDelimiter::Period, "."), (StepDelimiter::Newline, "\n")] {
        for g in &eight_samples(&mut p, Some(delimiter), 40) {
            let n = g.ids.len();
            assert_eq!(g.sample.tokens as usize, n);
            assert!((1..=40).contains(&n));
            // Each token's own text: only the last may hold the delimiter, and unless
            // the step hit the limit or EOS, it does.
            let tok = &p.model().tokenizer;
            let piece = |k: usize| {
                let before = tok.decode(&g.ids[..k]).unwrap();
                let after = tok.decode(&g.ids[..=k]).unwrap();
                after.get(before.len()..).unwrap_or("").to_string()
            };
            // (A line break ends a step only after non-blank text.)
            for k in 0..n - 1 {
                let blank_so_far = tok.decode(&g.ids[..=k]).unwrap().trim().is_empty();
                assert!(
                    !piece(k).contains(mark) || (mark == "\n" && blank_so_far),
                    "{delimiter:?}: {g:?}"
                );
            }
            assert!(
                n == 40 || g.ids[n - 1] == eos || piece(n - 1).contains(mark),
                "{delimiter:?}: {g:?}"
            );
            assert_eq!(g.sample.eos, g.ids[n - 1] == eos, "{g:?}");
            assert_eq!(g.sample.text, tok.decode(&g.ids).unwrap().trim());
        }
    }
}

#[test]
fn without_a_delimiter_a_chain_runs_to_eos_or_its_budget() {
    if !ort_available() {
        return;
    }
    let mut p = policy();
    let eos = p.model().manifest.special_tokens.eos;
    for g in &eight_samples(&mut p, None, 48) {
        let n = g.ids.len();
        assert!(g.ids[..n - 1].iter().all(|&id| id != eos), "{g:?}");
        assert!(n == 48 || g.ids[n - 1] == eos, "{g:?}");
    }
}

#[test]
fn values_match_the_goldens() {
    if !ort_available() {
        return;
    }
    let dir = fixture("tiny-value");
    let g = goldens("tiny-value");
    let q = golden_question(&g, &dir);
    let cases = g["value"].as_array().unwrap();
    let reqs: Vec<ScoreRequest> = cases
        .iter()
        .map(|c| ScoreRequest {
            question: &q,
            text: c["partial"].as_str().unwrap(),
        })
        .collect();
    let mut v = value();
    let batched = v.score(&reqs).unwrap();
    for (c, got) in cases.iter().zip(&batched) {
        let want = c["value"].as_f64().unwrap();
        let got = *got.as_ref().unwrap();
        assert!(
            (got - want).abs() < 1e-4,
            "{got} vs {want} for {:?}",
            c["partial"]
        );
    }
    for (r, b) in reqs.iter().zip(&batched) {
        let alone = v.score(std::slice::from_ref(r)).unwrap();
        assert!((alone[0].as_ref().unwrap() - b.as_ref().unwrap()).abs() < 1e-5);
    }
}

#[test]
fn an_unreadable_image_fails_only_its_request() {
    if !ort_available() {
        return;
    }
    let dir = fixture("tiny-policy");
    let g = goldens("tiny-policy");
    let good = golden_question(&g, &dir);
    let broken_file = std::env::temp_dir().join(format!("tsst-broken-{}.png", std::process::id()));
    std::fs::write(&broken_file, b"not a png").unwrap();
    let mut broken = good.clone();
    broken.image = Some(broken_file.clone());
    let mut missing = good.clone();
    missing.image = Some(dir.join("no-such-image.png"));

    let mut p = policy();
    let seeds = [1u64];
    let out = p
        .expand(&[
            request(&broken, "", &seeds, 0.0),
            request(&good, "", &seeds, 0.0),
            request(&missing, "", &seeds, 0.0),
        ])
        .unwrap();
    let err = out[0].as_ref().unwrap_err();
    assert!(err.0.contains("image unreadable"), "{err}");
    assert!(out[1].is_ok());
    assert!(out[2].is_err());

    let mut v = value();
    let scores = v
        .score(&[
            ScoreRequest {
                question: &good,
                text: "",
            },
            ScoreRequest {
                question: &broken,
                text: "",
            },
        ])
        .unwrap();
    assert!(scores[0].is_ok());
    assert!(scores[1].is_err());
    std::fs::remove_file(broken_file).ok();
}

#[test]
fn model_directories_are_checked() {
    if !ort_available() {
        return;
    }
    // A policy directory is not a value model, and a folder without a manifest is no
    // model at all: errors, not panics.
    let err = OnnxValue::load(&fixture("tiny-policy"), Device::Cpu, None)
        .err()
        .unwrap();
    assert!(err.to_string().contains("kind"), "{err}");
    let err = OnnxPolicy::load(&fixture("nonexistent"), Device::Cpu, None)
        .err()
        .unwrap();
    assert!(err.to_string().contains("manifest.json"), "{err}");
}

#[test]
fn the_factory_serves_scripted_and_model_directories() {
    use tsst_backend::ModelFactory;
    let factory = tsst_models::OnnxFactory::default();
    assert!(factory.policy("scripted:5ms").is_ok());
    assert!(factory.value("scripted").is_ok());
    let err = factory.policy("/no/such/model").err().unwrap();
    assert!(err.to_string().contains("/no/such/model"), "{err}");
    if ort_available() {
        let name = fixture("tiny-policy").display().to_string();
        assert!(factory.policy(&name).is_ok());
        assert!(factory
            .value(&fixture("tiny-value").display().to_string())
            .is_ok());
    }
}

/// With TSST_TEST_CUDA set (on a GPU machine with onnxruntime-gpu), the CUDA build
/// reproduces the goldens on device 0; without it, asking for CUDA where the library
/// or machine has none is an error, never a silent CPU fallback.
#[cfg(feature = "cuda")]
#[test]
fn cuda_matches_the_goldens_or_fails_cleanly() {
    if !ort_available() {
        return;
    }
    let dir = fixture("tiny-policy");
    let loaded = OnnxPolicy::load(&dir, Device::Cuda(0), None);
    if std::env::var_os("TSST_TEST_CUDA").is_none() {
        if let Err(e) = loaded {
            eprintln!("CUDA unavailable, as expected without TSST_TEST_CUDA: {e}");
        }
        return;
    }
    let mut p = loaded.unwrap();
    let g = goldens("tiny-policy");
    let q = golden_question(&g, &dir);
    let out = p.generate(&[request(&q, "", &[1], 0.0)]).unwrap();
    assert_eq!(out[0].as_ref().unwrap()[0].ids, ids(&g["greedy"]["ids"]));
    let vg = goldens("tiny-value");
    let mut v = OnnxValue::load(&fixture("tiny-value"), Device::Cuda(0), None).unwrap();
    for case in vg["value"].as_array().unwrap() {
        let got = v
            .score(&[ScoreRequest {
                question: &q,
                text: case["partial"].as_str().unwrap(),
            }])
            .unwrap();
        let want = case["value"].as_f64().unwrap();
        let got = *got[0].as_ref().unwrap();
        eprintln!("cuda value {got} vs golden {want}");
        assert!((got - want).abs() < 1e-4, "{got} vs {want}");
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_is_an_error() {
    if !ort_available() {
        return;
    }
    let err = OnnxPolicy::load(&fixture("tiny-policy"), Device::Cuda(0), None)
        .err()
        .unwrap();
    assert!(err.to_string().contains("cuda"), "{err}");
}

#[test]
fn resizing_matches_pil_bicubic() {
    // Images in every shape (wider, taller, smaller than the model size) against the
    // export tool's PIL preprocessing, byte for byte.
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("pil_resize.json")).unwrap())
            .unwrap();
    let mut vision = Manifest::load(&fixture("tiny-policy")).unwrap().vision;
    for case in golden["cases"].as_array().unwrap() {
        vision.image_size = case["image_size"].as_u64().unwrap() as u32;
        let img = image::open(data.join(case["image"].as_str().unwrap()))
            .unwrap()
            .to_rgb8();
        let bytes = preprocess::prepared(&img, &vision).into_raw();
        let sum: u64 = bytes.iter().map(|&b| u64::from(b)).sum();
        let weighted: u64 = bytes
            .iter()
            .enumerate()
            .map(|(i, &b)| (i as u64 % 9973 + 1) * u64::from(b))
            .sum();
        assert_eq!(sum, case["sum"].as_u64().unwrap(), "{}", case["image"]);
        assert_eq!(
            weighted,
            case["weighted_sum"].as_u64().unwrap(),
            "{}",
            case["image"]
        );
    }
    // And the golden question's image.
    let g = goldens("tiny-policy");
    let img = image::open(fixture("tiny-policy").join(g["image"].as_str().unwrap()))
        .unwrap()
        .to_rgb8();
    vision.image_size = 56;
    let bytes = preprocess::prepared(&img, &vision).into_raw();
    let sum: u64 = bytes.iter().map(|&b| u64::from(b)).sum();
    assert_eq!(sum, g["preprocessed_u8"]["sum"].as_u64().unwrap());
}

#[test]
fn children_of_one_node_score_as_they_do_alone() {
    if !ort_available() {
        return;
    }
    let dir = fixture("tiny-value");
    let g = goldens("tiny-value");
    let image = golden_question(&g, &dir);
    let t = text_only();
    let parent = "Step 1: I see a red square and a blue circle. ";
    let children: Vec<String> = [
        "Step 2: The square is left.",
        "Step 2: The circle is larger than it looks.",
        "Step 2: So",
        "Final Answer: (A)",
    ]
    .iter()
    .map(|c| format!("{parent}{c}"))
    .collect();
    // Two nodes' children (one with the image, one without) and a lone text between.
    let mut reqs: Vec<ScoreRequest> = children
        .iter()
        .map(|c| ScoreRequest {
            question: &image,
            text: c,
        })
        .collect();
    reqs.push(ScoreRequest {
        question: &t,
        text: "Step 1: alone.",
    });
    reqs.extend(children.iter().map(|c| ScoreRequest {
        question: &t,
        text: c,
    }));
    let mut v = value();
    let together = v.score(&reqs).unwrap();
    for (r, got) in reqs.iter().zip(&together) {
        let alone = v.score(std::slice::from_ref(r)).unwrap();
        let (a, b) = (alone[0].as_ref().unwrap(), got.as_ref().unwrap());
        assert!(
            (a - b).abs() < 1e-5,
            "{a} alone, {b} with its siblings: {:?}",
            r.text
        );
    }
}
