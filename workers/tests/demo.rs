//! `tsst demo` with the committed demo models (models/demo, the small LLaVA trained on
//! the synthetic benchmark): on questions drawn with a seed they never saw, the direct
//! and the beam accuracy are printed and well above the 0.25 of chance.
mod common;

use common::repo;
use std::path::Path;

/// A shipped demo config on 20 questions, with `data` for its dataset and the repo's
/// models named by absolute path.
fn config(name: &str, data: &Path, out: &Path) {
    let text = std::fs::read_to_string(repo().join("config").join(name)).unwrap();
    let models = repo().join("models/demo").canonicalize().unwrap();
    let text = text
        .replace(
            "dataset_root: data/demo",
            &format!("dataset_root: {}", data.display()),
        )
        .replace("data_partition: '0_49'", "data_partition: '0_19'")
        .replace("models/demo", &models.display().to_string());
    std::fs::write(out.join(name), text).unwrap();
}

fn greedy(metrics: &Path) -> f64 {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(metrics).unwrap()).unwrap();
    m["overall"]["greedy"].as_f64().unwrap()
}

#[test]
fn the_demo_models_answer_well_above_chance() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    config("demo.yaml", &data, dir);
    config("demo-direct.yaml", &data, dir);
    let out = common::tsst(dir)
        .args([
            "demo",
            "--config",
            "demo.yaml",
            "--direct",
            "demo-direct.yaml",
        ])
        .args(["--out", "runs", "--n", "200"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("generating 200 synthetic questions (easy)"),
        "{stdout}"
    );
    assert!(stdout.contains("demo: accuracy"), "{stdout}");
    assert!(
        stdout.contains("demo-small - demo-direct-small"),
        "{stdout}"
    );
    assert!(dir.join("runs/demo-small/dplus.json").exists());
    // Seeded end to end, so these are fixed numbers, not samples: 20 questions, chance 0.25.
    let direct = greedy(&dir.join("runs/demo-direct-small/metrics.json"));
    let beam = greedy(&dir.join("runs/demo-small/metrics.json"));
    assert!(direct >= 0.5, "direct {direct}");
    assert!(beam >= 0.5, "beam {beam}");
}
