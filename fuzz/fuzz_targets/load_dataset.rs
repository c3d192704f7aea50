//! Any bytes as a dataset's annotation files (A-OKVQA JSON, ScienceQA problems and
//! splits, VCR JSONL): bad records are reported, the load never panics, and dataset
//! paths never leave the root.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tsst_datasets::{load, Selection};
use tsst_messages::DataSource;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = dir.path();
    let (source, split) = match which % 3 {
        0 => {
            std::fs::write(root.join("aokvqa_v1p0_val.json"), rest).unwrap();
            (DataSource::Aokvqa, "val")
        }
        1 => {
            // problems.json, a NUL byte, pid_splits.json.
            let cut = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            std::fs::write(root.join("problems.json"), &rest[..cut]).unwrap();
            std::fs::write(
                root.join("pid_splits.json"),
                rest.get(cut + 1..).unwrap_or(&[]),
            )
            .unwrap();
            (DataSource::Scienceqa, "test")
        }
        _ => {
            std::fs::write(root.join("val.jsonl"), rest).unwrap();
            (DataSource::Vcr, "val")
        }
    };
    if let Ok(loaded) = load(source, root, split) {
        for q in &loaded.questions {
            assert!(q.answer < q.choices.len(), "an answer out of range loaded");
            if let Some(image) = &q.image {
                assert!(
                    image.starts_with(root.canonicalize().unwrap()),
                    "an image outside the root"
                );
            }
        }
        let _ = tsst_datasets::select(source, loaded, &Selection::all(split, 7));
    }
    let _ = tsst_datasets::check(source, root, None);
});
