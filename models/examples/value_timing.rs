//! The value model's calls in isolation, the way a search batches them: `--nodes`
//! frontier nodes (over `--questions` questions, each with its own image), each with
//! `--children` children whose texts continue the node's chain by one step. Times
//! `--calls` calls (the first not counted) and splits each into its phases.
//!
//! ```text
//! cargo run --release --example value_timing -p tsst-models -- VALUE_DIR [--device cuda:0]
//!     [--questions 8] [--nodes 64] [--children 5] [--chain-steps 8] [--calls 4]
//!     [--kv host|bound|shared] [--rest-words 1] [--adjacent 0]
//! ```
//! `--rest-words N` ends each child's own step with N words (1 by default): whether
//! a continuation's cost grows with its positions or is fixed per run. `--rest-words
//! A-B` draws each child's count from A..=B, afresh for every call, as a search's
//! steps vary: whether a length not seen before costs more than one seen. `--adjacent 1`
//! puts a question's nodes next to each other in the call, as a search's score batches
//! do (by default node n belongs to question n mod `--questions`, so neighbours differ).
//! `TSST_VALUE_PREFIX_REUSE`, `TSST_STEM_CACHE_MB`, `TSST_ARENA_SHRINK` and
//! `TSST_ATTENTION` apply.
use std::path::PathBuf;
use std::time::Instant;
use tsst_backend::ScoreRequest;
use tsst_messages::{DataSource, Question};
use tsst_models::{Device, KvMode, OnnxValue};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut it = std::env::args().skip(1);
    let dir = PathBuf::from(it.next().ok_or("usage: value_timing VALUE_DIR [--device D] [--questions N] [--nodes N] [--children N] [--chain-steps N] [--calls N]")?);
    let (mut device, mut questions, mut nodes, mut children, mut chain, mut calls) =
        (Device::Cpu, 8usize, 64usize, 5usize, 8usize, 4usize);
    let mut kv: Option<KvMode> = None;
    let mut adjacent = false;
    let mut rest_words = (1usize, 1usize);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--device" => device = value.parse()?,
            "--questions" => questions = value.parse()?,
            "--nodes" => nodes = value.parse()?,
            "--children" => children = value.parse()?,
            "--chain-steps" => chain = value.parse()?,
            "--calls" => calls = value.parse()?,
            "--kv" => kv = Some(value.parse()?),
            "--adjacent" => adjacent = value != "0",
            "--rest-words" => {
                rest_words = match value.split_once('-') {
                    Some((lo, hi)) => (lo.parse()?, hi.parse()?),
                    None => (value.parse()?, value.parse()?),
                };
                if rest_words.0 > rest_words.1 {
                    return Err(format!("--rest-words {value}: empty range").into());
                }
            }
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let images = tempdir()?;
    let qs: Vec<Question> = (0..questions)
        .map(|q| {
            let path = images.join(format!("{q}.png"));
            let shade = (q * 37 % 256) as u8;
            image::RgbImage::from_pixel(64, 64, image::Rgb([shade, 255 - shade, 128]))
                .save(&path)?;
            Ok(Question {
                id: format!("q{q}"),
                source: DataSource::Aokvqa,
                image: Some(path),
                question: format!("How many shapes are in picture {q}?"),
                choices: vec!["one".into(), "two".into(), "three".into(), "four".into()],
                answer: 0,
                rationales: vec![],
                context: None,
            })
        })
        .collect::<Result<_, image::ImageError>>()?;
    // Each child's words: fixed, or drawn (a small LCG, so the example needs no
    // random crate) afresh for each call.
    let texts_of_call = |call: usize| -> Vec<(usize, String)> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ call as u64;
        let mut words = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            rest_words.0 + (state >> 33) as usize % (rest_words.1 - rest_words.0 + 1)
        };
        let mut texts = Vec::new();
        for n in 0..nodes {
            let prefix: String = (1..=chain)
                .map(|k| format!("Step {k}: Node {n} sees shape number {k} in the picture. "))
                .collect();
            for c in 0..children {
                texts.push((
                    if adjacent {
                        n * questions / nodes
                    } else {
                        n % questions
                    },
                    format!(
                        "{prefix}Step {}: Child {c} counts the shapes{}.",
                        chain + 1,
                        " again".repeat(words())
                    ),
                ));
            }
        }
        texts
    };
    let mut value = OnnxValue::load(&dir, device, None)?;
    if let Some(mode) = kv {
        value.model().set_kv_mode(mode)?;
    }
    let per_call = nodes * children;
    println!(
        "{per_call} texts a call ({nodes} nodes x {children} children, {questions} questions, rests of {}-{} words), {device}, {:?}",
        rest_words.0,
        rest_words.1,
        value.model().kv_mode()
    );
    for call in 0..calls {
        let texts = texts_of_call(call);
        let batch: Vec<ScoreRequest> = texts
            .iter()
            .map(|(q, text)| ScoreRequest {
                question: &qs[*q],
                text,
            })
            .collect();
        let t = Instant::now();
        let out = value.values(&batch)?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let failed = out.iter().filter(|r| r.is_err()).count();
        let p = value.phases();
        println!(
            "call {call}{}: {ms:.0} ms, {:.2} ms a text; prompts {:.0}, prefix {:.0}, rests {:.0}, runs {:.0}, whole {:.0}, head {:.0} ms; failed {failed}",
            if call == 0 { " (warm-up)" } else { "" },
            ms / batch.len() as f64,
            p.prompts,
            p.prefix,
            p.rests,
            p.runs,
            p.whole,
            p.head,
        );
    }
    Ok(())
}

fn tempdir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("tsst-value-timing-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
