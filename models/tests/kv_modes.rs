//! The three places the KV cache can live (`KvMode`), exercised on the CPU, where the
//! bound modes run the same IoBinding code as on CUDA with host memory standing in
//! for the device: all three generate what the goldens and each other say. With
//! `--features cuda` and TSST_TEST_CUDA set, the same on device 0.
mod common;

use common::{fixture, golden_question, goldens, ids, ort_available};
use tsst_backend::{ExpandRequest, ScoreRequest, ValueBackend};
use tsst_messages::{DataSource, Question, StepDelimiter};
use tsst_models::{Device, KvMode, OnnxPolicy, OnnxValue};

/// How a mode runs besides its KvMode.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Extra {
    None,
    /// Bound, with presents allocated by the crate.
    Prealloc,
    /// Shared, each prompt prefilled over its question's cached stem.
    Stems,
    /// Shared, what a prompt shares with a slot's cache copied from there.
    SlotReuse,
}

/// Each mode, Bound with presents allocated by the crate, and Shared with stems kept
/// or copied from the slots.
const MODES: [(KvMode, Extra); 6] = [
    (KvMode::Host, Extra::None),
    (KvMode::Bound, Extra::None),
    (KvMode::Bound, Extra::Prealloc),
    (KvMode::Shared, Extra::None),
    (KvMode::Shared, Extra::Stems),
    (KvMode::Shared, Extra::SlotReuse),
];

fn request<'a>(
    q: &'a Question,
    prefix: &'a str,
    seeds: &'a [u64],
    temperature: f64,
    delimiter: StepDelimiter,
    max_new_tokens: u32,
) -> ExpandRequest<'a> {
    ExpandRequest {
        question: q,
        prefix,
        seeds,
        temperature,
        max_new_tokens,
        delimiter: Some(delimiter),
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

fn check_modes(device: Device) {
    let dir = fixture("tiny-policy");
    let g = goldens("tiny-policy");
    let q = golden_question(&g, &dir);
    let t = text_only();
    let golden = ids(&g["greedy"]["ids"]);
    // Prompts of different lengths, several samples each, steps ending at different
    // times (token limits 12, 3, 7, 5): forks, finished rows kept in the batch, then
    // compacted (after 5 tokens 3 of 11 rows are done, after 7 tokens 5 of 8).
    let seeds: [&[u64]; 4] = [&[1, 2, 3], &[4], &[5, 6, 7, 8, 9], &[10, 11]];
    let batch = vec![
        request(&q, "", seeds[0], 0.0, StepDelimiter::StepMarker, 12),
        request(
            &q,
            "Step 1: I see shapes.",
            seeds[1],
            0.0,
            StepDelimiter::Period,
            3,
        ),
        request(&t, "", seeds[2], 1.0, StepDelimiter::Period, 7),
        request(
            &q,
            "Step 1: I see three shapes.",
            seeds[3],
            0.7,
            StepDelimiter::Newline,
            5,
        ),
    ];
    // More prompts than one prefill run takes (8): caches of two prefill chunks,
    // different lengths, merged.
    let prefixes: Vec<String> = (0..10)
        .map(|k| "Step 1: I see a shape. ".repeat(k))
        .collect();
    let many: Vec<ExpandRequest> = prefixes
        .iter()
        .enumerate()
        .map(|(k, prefix)| {
            let question = if k % 2 == 0 { &q } else { &t };
            request(question, prefix, &[7], 0.0, StepDelimiter::StepMarker, 4)
        })
        .collect();
    let mut results = Vec::new();
    let mut prefilled = Vec::new();
    for (mode, extra) in MODES {
        let mut p = OnnxPolicy::load(&dir, device, None).unwrap();
        p.model().set_kv_mode(mode).unwrap();
        p.model().set_prealloc_presents(extra == Extra::Prealloc);
        p.model()
            .set_stem_bytes(if extra == Extra::Stems { 1 << 30 } else { 0 });
        p.set_slot_reuse(extra == Extra::SlotReuse);
        let single = p
            .generate(&[request(&q, "", &[1], 0.0, StepDelimiter::StepMarker, 12)])
            .unwrap();
        assert_eq!(single[0].as_ref().unwrap()[0].ids, golden, "{mode:?} alone");
        let mut out = p.generate(&batch).unwrap();
        assert_eq!(
            out[0].as_ref().unwrap()[0].ids,
            golden,
            "{mode:?} in a batch"
        );
        // A budget of a few rows: requests wait for rows to finish (row slots freed,
        // or the batch regrouped) and generate the same.
        let per_position = p.kv_budget().per_position;
        p.set_kv_budget(per_position * 4 * 300);
        let tight = p.generate(&batch).unwrap();
        for (i, (a, b)) in out.iter().zip(&tight).enumerate() {
            let ids = |o: &tsst_models::policy::GeneratedOutput| {
                o.as_ref()
                    .unwrap()
                    .iter()
                    .map(|g| g.ids.clone())
                    .collect::<Vec<_>>()
            };
            assert_eq!(ids(a), ids(b), "{mode:?}, request {i} under a tight budget");
        }
        out.extend(p.generate(&many).unwrap());
        // A prompt that opens as one a finished row left in its slot (`many`'s third,
        // its prompt and the tokens it fed): with slot reuse it is copied from there,
        // however long ago that row finished, and only the rest is prefilled.
        let before = p.model().prefilled();
        let later = format!("{}Then", prefixes[2]);
        out.extend(
            p.generate(&[request(&q, &later, &[3], 0.0, StepDelimiter::Period, 4)])
                .unwrap(),
        );
        if extra == Extra::SlotReuse {
            let ids = p.prompt_ids(&q, &later).unwrap();
            let whole = p.model().positions_of(&ids) as u64;
            let ran = p.model().prefilled() - before;
            assert!(ran * 4 < whole, "prefilled {ran} of a prompt of {whole}");
        }
        if extra == Extra::Stems {
            // Both questions' stems kept, and every later prompt (20 in all) prefilled
            // over one.
            let stems = p.model().stems();
            assert_eq!((stems.entries(), stems.misses, stems.hits), (2, 2, 18));
        }
        results.push(((mode, extra), out));
        prefilled.push(p.model().prefilled());
    }
    // Copying from the slots prefilled less than prefilling every prompt whole (the
    // same requests, Shared without reuse).
    assert!(
        prefilled[5] < prefilled[3],
        "prefilled with reuse from the slots {} against {} without",
        prefilled[5],
        prefilled[3]
    );
    let (_, host) = &results[0];
    for ((mode, extra), out) in &results[1..] {
        let mode = (mode, extra);
        for (i, (a, b)) in host.iter().zip(out).enumerate() {
            let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(b) {
                assert_eq!(x.ids, y.ids, "{mode:?}, request {i}");
                assert!(
                    (x.sample.logprob - y.sample.logprob).abs() < 1e-4,
                    "{mode:?}, request {i}: {} vs {}",
                    x.sample.logprob,
                    y.sample.logprob
                );
            }
        }
    }

    let vg = goldens("tiny-value");
    let vq = golden_question(&vg, &fixture("tiny-value"));
    let cases = vg["value"].as_array().unwrap();
    let reqs: Vec<ScoreRequest> = cases
        .iter()
        .map(|c| ScoreRequest {
            question: &vq,
            text: c["partial"].as_str().unwrap(),
        })
        .collect();
    let mut v = OnnxValue::load(&fixture("tiny-value"), device, None).unwrap();
    // The goldens' texts share their question's prefix: scored from one prefill of it
    // (in `Shared`, each text's rest written in place after one copy of the prefix).
    // Then in `Shared` with stems: twice, the second time over the stem the first kept.
    let runs = [
        (KvMode::Host, 0),
        (KvMode::Bound, 0),
        (KvMode::Shared, 0),
        (KvMode::Shared, 1 << 30),
        (KvMode::Shared, 1 << 30),
    ];
    for (run, (mode, stems)) in runs.into_iter().enumerate() {
        v.model().set_kv_mode(mode).unwrap();
        if run != 4 {
            v.model().set_stem_bytes(stems);
        }
        let got = v.score(&reqs).unwrap();
        for (c, got) in cases.iter().zip(&got) {
            let want = c["value"].as_f64().unwrap();
            let got = *got.as_ref().unwrap();
            assert!(
                (got - want).abs() < 1e-4,
                "{mode:?}, stems {stems}: {got} vs {want}"
            );
        }
    }
    let stems = v.model().stems();
    assert_eq!((stems.entries(), stems.misses), (1, 1));
    assert!(stems.hits >= 1);
    v.model().set_stem_bytes(0);
}

#[test]
fn every_kv_mode_matches_on_the_cpu() {
    if !ort_available() {
        return;
    }
    check_modes(Device::Cpu);
}

/// On a GPU machine (TSST_TEST_CUDA=1): the float32 fixtures' GroupQueryAttention has
/// no CUDA kernel and runs on the CPU provider, so `Shared` there checks the binding
/// code, not the in-place kernel (the float16 timing run checks that).
#[cfg(feature = "cuda")]
#[test]
fn every_kv_mode_matches_on_cuda() {
    if !ort_available() || std::env::var_os("TSST_TEST_CUDA").is_none() {
        return;
    }
    check_modes(Device::Cuda(0));
}

/// The sample graph chooses what `sampling::choose` chooses from the same logits and
/// draw: greedy, sampled at several temperatures, and the log-probabilities.
#[test]
fn the_sample_graph_chooses_like_the_host() {
    use ort::value::{DynValue, Tensor};
    use tsst_models::sampling::{choose_with, Rng};
    if !ort_available() {
        return;
    }
    let env = tsst_models::ort_lib::environment(None, false).unwrap();
    let f32_type = ort::value::TensorElementType::Float32;
    // Vocabularies of several blocks (256 entries) with a partial last one, exactly
    // two blocks, and less than one; rows greedy and sampled, and all greedy.
    for (rows, vocab, all_greedy) in [
        (128usize, 1000usize, false),
        (64, 512, false),
        (32, 37, false),
        (16, 1000, true),
    ] {
        let bytes = tsst_models::ops::sample_graph(f32_type, vocab, all_greedy).unwrap();
        let mut session =
            tsst_models::device::open_session_from_memory(&env, Device::Cpu, &bytes, "sample")
                .unwrap();
        let mut rng = Rng::new(42 + vocab as u64);
        let logits: Vec<f32> = (0..rows * vocab)
            .map(|_| (rng.next_f64() * 8.0 - 4.0) as f32)
            .collect();
        let temperature: Vec<f32> = (0..rows)
            .map(|r| {
                if all_greedy {
                    0.0
                } else {
                    [0.0, 0.3, 0.7, 1.0, 2.0][r % 5]
                }
            })
            .collect();
        let uniform: Vec<f32> = (0..rows).map(|_| rng.next_f64() as f32).collect();
        let extra = tsst_models::ops::sample_inputs(&temperature, &uniform, vocab).unwrap();
        assert_eq!(extra.is_none(), all_greedy);
        let logits_value: DynValue =
            Tensor::from_array((vec![rows as i64, 1, vocab as i64], logits.clone()))
                .unwrap()
                .into();
        let mut inputs = vec![("logits", logits_value)];
        inputs.extend(extra.unwrap_or_default());
        let outputs = session.run(inputs).unwrap();
        let tokens = outputs["token"]
            .try_extract_tensor::<i64>()
            .unwrap()
            .1
            .to_vec();
        let logprobs = outputs["logprob"]
            .try_extract_tensor::<f32>()
            .unwrap()
            .1
            .to_vec();
        for r in 0..rows {
            let row = &logits[r * vocab..(r + 1) * vocab];
            let host = choose_with(row, f64::from(temperature[r]), || f64::from(uniform[r]));
            assert_eq!(tokens[r], host.token, "row {r} at T={}", temperature[r]);
            assert!(
                (f64::from(logprobs[r]) - host.logprob).abs() < 1e-5,
                "row {r}: {} vs {}",
                logprobs[r],
                host.logprob
            );
        }
    }
}

/// A question's nodes side by side, as the scorer gets them: one prefix for all, and
/// in a shared buffer each child runs only from where it parts from the text before
/// it (its siblings share their node's step). Every value is the text's value scored
/// alone, whole.
#[test]
fn siblings_score_as_whole_texts() {
    if !ort_available() {
        return;
    }
    let dir = fixture("tiny-value");
    let q = golden_question(&goldens("tiny-value"), &dir);
    let texts = [
        "The animal is grey. It has a fin.",
        "The animal is grey. It breathes air.",
        "The animal is grey. It breathes air. So the answer is B.",
        "The picture shows water. Whales live there.",
        "The picture shows water. Sharks live there.",
        "The picture shows sand.",
    ];
    let reqs: Vec<ScoreRequest> = texts
        .iter()
        .map(|&text| ScoreRequest { question: &q, text })
        .collect();
    for mode in [KvMode::Shared, KvMode::Bound] {
        let mut v = OnnxValue::load(&dir, Device::Cpu, None).unwrap();
        v.model().set_kv_mode(mode).unwrap();
        let together = v.score(&reqs).unwrap();
        for (req, got) in reqs.iter().zip(&together) {
            let alone = v.score(std::slice::from_ref(req)).unwrap();
            let (got, want) = (*got.as_ref().unwrap(), *alone[0].as_ref().unwrap());
            assert!(
                (got - want).abs() < 1e-4,
                "{mode:?}, {:?}: {got} together, {want} alone",
                req.text
            );
        }
    }
}
