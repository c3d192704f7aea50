//! `tsst selftrain` embedded on the tiny models.
//! - Two rounds after round 0, killed in the middle and started again, end with every
//!   stage done once, three ready model versions chained by parent, and a report that
//!   parses. Its trainer config "trains" by copying the parent models: what is under
//!   test is the loop (warm-up, search with the previous version, data, training,
//!   evaluation, state and resume), quickly.
//! - One round with the real trainer (tools/train: LoRA in PyTorch, merged and exported
//!   to ONNX): the versions it makes are new weights that the next stages load.
//! - The shipped demo models rebuild into PyTorch checkpoints (tools/train/from_onnx.py).
mod common;

use common::repo;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn fixtures() -> PathBuf {
    repo().join("tests/fixtures/models")
}

fn tsst(dir: &Path) -> Command {
    let mut c = common::tsst(dir);
    c.env("RUST_LOG", "info");
    c
}

fn state(dir: &Path) -> serde_json::Value {
    std::fs::read_to_string(dir.join("out/selftrain.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// The training tools' python: `TSST_TRAIN_PYTHON` (CI sets it, and then it must
/// work), else `.venv-tools/bin/python` (`tools/train/setup.sh`); `None` skips.
fn train_python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TSST_TRAIN_PYTHON").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let venv = repo().join(".venv-tools/bin/python");
    let ok = Command::new(&venv)
        .args(["-c", "import torch, peft, transformers"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: no training tools (tools/train/setup.sh installs them)");
    }
    ok.then_some(venv)
}

/// A model directory's ONNX graphs and weights, in file-name order.
fn weights(model: &Path) -> Vec<u8> {
    let mut files: Vec<_> = std::fs::read_dir(model)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx" || e == "data"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| std::fs::read(f).unwrap())
        .collect()
}

fn synth_and_configs(dir: &Path) {
    let synth = tsst(dir)
        .args([
            "data", "synth", "--out", "synth", "--n", "16", "--seed", "4",
        ])
        .output()
        .unwrap();
    assert!(synth.status.success(), "{synth:?}");
    let search = "task: multiple_choice_steps_beam\ndataset_name: aokvqa\ndataset_root: synth\n\
        data_subset: train\ndata_partition: '0_3'\nseed: 5\nnum_beams: 2\nbranch: 2\n\
        n_consistency: 2\nmax_length: 48\nstep_max_tokens: 12\ntemperature: 0.7\n\
        models:\n  - {policy_model: scripted, value_model: scripted, tag: st, run_flag: true, use_value: true}\n";
    std::fs::write(dir.join("search.yaml"), search).unwrap();
    let direct = "task: multiple_choice_direct\nnum_beams: 1\nmax_length: 32\ndo_sample: false\n\
        temperature: 0\ndataset_name: aokvqa\ndataset_root: synth\ndata_subset: val\n\
        data_partition: '0_1'\nbranch: 1\nn_consistency: 1\n\
        models:\n  - {policy_model: scripted, tag: st, run_flag: true, use_value: false}\n";
    std::fs::write(dir.join("direct.yaml"), direct).unwrap();
}

fn done(dir: &Path) -> Vec<String> {
    state(dir)["done"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// `tsst selftrain` on the folder `synth_and_configs` wrote, with its trainer.yaml.
fn selftrain_args<'a>(rounds: &'a str, name: &'a str) -> [&'a str; 14] {
    [
        "selftrain",
        "--config",
        "search.yaml",
        "--trainer",
        "trainer.yaml",
        "--rounds",
        rounds,
        "--eval",
        "direct.yaml",
        "--out",
        "out",
        "--name",
        name,
        "--quiet",
    ]
}

#[test]
fn two_rounds_survive_a_kill_and_resume_where_they_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth_and_configs(dir);
    let trainer = format!(
        "models_root: models\nbase_policy: {fx}/tiny-policy\nbase_value: {fx}/tiny-value\n\
         stages:\n\
         \x20 - {{name: policy, program: cp, args: [-r, '{{parent_policy}}', '{{out}}/policy'], timeout_secs: 30}}\n\
         \x20 - {{name: value, program: cp, args: [-r, '{{parent_value}}', '{{out}}/value'], timeout_secs: 30}}\n\
         \x20 - {{name: pause, program: sleep, args: ['1'], timeout_secs: 30}}\n\
         policy_dir: '{{out}}/policy'\nvalue_dir: '{{out}}/value'\n",
        fx = fixtures().display()
    );
    std::fs::write(dir.join("trainer.yaml"), trainer).unwrap();
    let args = selftrain_args("2", "st");

    // Killed once round 1's search is done (in round 1's training, or later).
    let mut first = tsst(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !done(dir).iter().any(|s| s == "r1/search") {
        assert!(first.try_wait().unwrap().is_none(), "selftrain ended early");
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let at_kill = done(dir);
    assert!(
        !at_kill.iter().any(|s| s == "r2/eval/direct"),
        "the kill came after the end: {at_kill:?}"
    );

    let second = tsst(dir).args(args).output().unwrap();
    let log = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{log}");
    assert!(String::from_utf8_lossy(&second.stdout).contains("resuming st"));
    for stage in &at_kill {
        assert!(
            log.contains(&format!("done before; skipped stage=\"{stage}\"")),
            "{stage} ran again:\n{log}"
        );
    }
    let all = done(dir);
    let expected = [
        "r0/warmup",
        "r0/train",
        "r0/eval/direct",
        "r1/search",
        "r1/train",
        "r1/eval/direct",
        "r2/search",
        "r2/train",
        "r2/eval/direct",
    ];
    assert_eq!(all, expected, "every stage once, in order");

    let versions = state(dir)["versions"].as_array().cloned().unwrap();
    let summary: Vec<(u64, Option<u64>, &str)> = versions
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["parent"].as_u64(),
                v["status"]["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (0, None, "ready"),
            (1, Some(0), "ready"),
            (2, Some(1), "ready")
        ]
    );
    // Round 1 searched with version 0's models.
    let r1 = std::fs::read_to_string(dir.join("out/r1/st-r1-search.yaml")).unwrap();
    assert!(r1.contains("models/st/v0/policy"), "{r1}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/report.json")).unwrap())
            .unwrap();
    assert_eq!(report["rounds"].as_array().unwrap().len(), 3);
    assert!(report["rounds"][2]["metrics"]["direct"]["overall"]["questions"].as_u64() == Some(2));
    let md = std::fs::read_to_string(dir.join("out/report.md")).unwrap();
    assert!(md.contains("| 2 | v2 | v1 |"), "{md}");
    let svg = std::fs::read_to_string(dir.join("out/report.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg}"
    );
    assert_eq!(svg.matches(',').count(), 3, "one point per version: {svg}");
    let printed = tsst(dir).args(["report", "out"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&printed.stdout), md);

    // Versions evaluated side by side; an unknown version is named.
    let eval = |versions: &str| {
        tsst(dir)
            .args([
                "eval",
                "--config",
                "direct.yaml",
                "--selftrain",
                "out",
                "--quiet",
            ])
            .args(["--versions", versions])
            .output()
            .unwrap()
    };
    let both = eval("0,2");
    let table = String::from_utf8_lossy(&both.stdout);
    assert!(
        both.status.success(),
        "{}",
        String::from_utf8_lossy(&both.stderr)
    );
    assert!(
        table.contains("| v0 | 2 |") && table.contains("| v2 | 2 |"),
        "{table}"
    );
    let missing = eval("7");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("version 7 is not a ready version"));
}

#[test]
fn a_round_with_the_real_trainer_makes_new_weights_that_the_loop_loads() {
    let Some(python) = train_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth_and_configs(dir);
    let tools = repo().join("tools/train/train.py");
    // The value model also with the within-question ranking term.
    let stage = |kind: &str, data: &str| {
        let rank = if kind == "value" {
            ", --rank-weight, '1'"
        } else {
            ""
        };
        format!(
            "  - {{name: train-{kind}, program: '{py}', args: ['{tools}', --kind, {kind}, --base, '{{parent_{kind}}}', \
             --data, '{{{data}}}', --image-root, synth, --out, '{{out}}/{kind}', --lora-r, '8', --lora-alpha, '16', \
             --epochs, '2', --export{rank}], timeout_secs: 600}}\n",
            py = python.display(),
            tools = tools.display(),
        )
    };
    let trainer = format!(
        "models_root: models\nbase_policy: tiny-random\nbase_value: tiny-random\nstages:\n{}{}\
         policy_dir: '{{out}}/policy/onnx'\nvalue_dir: '{{out}}/value/onnx'\n",
        stage("policy", "policy_data"),
        stage("value", "value_data"),
    );
    std::fs::write(dir.join("trainer.yaml"), trainer).unwrap();
    let out = tsst(dir)
        .args(selftrain_args("1", "real"))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(
        done(dir),
        [
            "r0/warmup",
            "r0/train",
            "r0/eval/direct",
            "r1/search",
            "r1/train",
            "r1/eval/direct"
        ]
    );
    let versions = state(dir)["versions"].as_array().cloned().unwrap();
    assert_eq!(versions.len(), 2);
    for v in &versions {
        assert_eq!(v["status"]["state"], "ready", "{v}");
    }
    assert_eq!(versions[1]["parent"].as_u64(), Some(0));

    // Each version trained on records of its own, and its exported weights are new:
    // not the random fixture's, not its parent's. The exception: round 1's D+ and Dv
    // are empty when v0 (a tiny random model after one LoRA round on 12 warm-up
    // records) finished no verified answer, and empty data leaves the parent as it was.
    for kind in ["policy", "value"] {
        let mut seen = vec![weights(&fixtures().join(format!("tiny-{kind}")))];
        for v in 0..2 {
            let root = dir.join(format!("models/real/v{v}/{kind}"));
            let train: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(root.join("train.json")).unwrap())
                    .unwrap();
            let w = weights(&root.join("onnx"));
            if v == 1 && train["records"] == 0 {
                assert_eq!(&w, seen.last().unwrap(), "an empty D+ keeps the parent");
                continue;
            }
            assert!(
                train["records"].as_u64().unwrap() > 0,
                "v{v} {kind}: {train}"
            );
            assert!(train["steps"].as_u64().unwrap() > 0, "v{v} {kind}: {train}");
            assert!(
                !seen.contains(&w),
                "v{v} {kind}: the weights did not change"
            );
            seen.push(w);
        }
    }
    // Round 1 searched and was evaluated with what round 0 trained.
    let r1 = std::fs::read_to_string(dir.join("out/r1/real-r1-search.yaml")).unwrap();
    assert!(r1.contains("models/real/v0/policy/onnx"), "{r1}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/report.json")).unwrap())
            .unwrap();
    assert_eq!(report["rounds"].as_array().unwrap().len(), 2);
}

/// `--warm-start`: models trained elsewhere are version 0 as they are (no warm-up data,
/// no round-0 training), round 1 searches with them and trains from them; a folder
/// that is not an exported model is refused by name.
#[test]
fn a_warm_start_is_version_zero_and_round_one_trains_from_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth_and_configs(dir);
    let trainer = "models_root: models\nbase_policy: none\nbase_value: none\nstages:\n\
         \x20 - {name: policy, program: cp, args: [-r, '{parent_policy}', '{out}/policy'], timeout_secs: 30}\n\
         \x20 - {name: value, program: cp, args: [-r, '{parent_value}', '{out}/value'], timeout_secs: 30}\n\
         policy_dir: '{out}/policy'\nvalue_dir: '{out}/value'\n";
    std::fs::write(dir.join("trainer.yaml"), trainer).unwrap();
    let (policy, value) = (
        fixtures().join("tiny-policy"),
        fixtures().join("tiny-value"),
    );

    let refused = tsst(dir)
        .args(selftrain_args("1", "warm"))
        .arg("--warm-start")
        .args([Path::new("synth"), &value])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("--warm-start synth: not an exported model directory"),
        "{err}"
    );

    let out = tsst(dir)
        .args(selftrain_args("1", "warm"))
        .arg("--warm-start")
        .args([&policy, &value])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        done(dir),
        [
            "r0/adopt",
            "r0/eval/direct",
            "r1/search",
            "r1/train",
            "r1/eval/direct"
        ]
    );
    assert!(!dir.join("out/r0/warmup_policy.json").exists());
    let versions = state(dir)["versions"].as_array().cloned().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(
        versions[0]["policy"].as_str().unwrap(),
        policy.canonicalize().unwrap().display().to_string()
    );
    assert_eq!(versions[1]["parent"].as_u64(), Some(0));
    // Version 1 was trained from version 0: here, copied from it.
    assert_eq!(
        weights(&dir.join("models/warm/v1/policy")),
        weights(&policy)
    );
    let r1 = std::fs::read_to_string(dir.join("out/r1/warm-r1-search.yaml")).unwrap();
    assert!(r1.contains("tiny-policy"), "{r1}");
}

/// The shipped demo models come without their PyTorch checkpoints: `from_onnx.py`
/// rebuilds them from the ONNX files, and writes a checkpoint only when it gives back
/// the model directory's goldens (which the export checked against ONNX Runtime).
#[test]
fn the_shipped_demo_models_rebuild_into_checkpoints_that_match_their_goldens() {
    let Some(python) = train_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let tool = repo().join("tools/train/from_onnx.py");
    let demo = repo().join("models/demo");
    for kind in ["policy", "value"] {
        let out = tmp.path().join(kind);
        let run = Command::new(&python)
            .arg(&tool)
            .arg(demo.join(kind))
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let line: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(line["kind"], kind, "{line}");
        for file in ["config.json", "model.safetensors", "tokenizer.json"] {
            assert!(out.join(file).exists(), "{kind}: no {file}");
        }
        assert_eq!(out.join("value_head.safetensors").exists(), kind == "value");
    }

    // A directory whose goldens the rebuilt model does not give back (one value moved
    // by 0.01) is refused, and nothing is written.
    let broken = tmp.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    for e in std::fs::read_dir(demo.join("value")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), broken.join(e.file_name())).unwrap();
    }
    let goldens = broken.join("goldens.json");
    let mut g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&goldens).unwrap()).unwrap();
    let v = g["value"][0]["value"].as_f64().unwrap();
    g["value"][0]["value"] = serde_json::json!(v + 0.01);
    std::fs::write(&goldens, g.to_string()).unwrap();
    let out = tmp.path().join("refused");
    let run = Command::new(&python)
        .arg(&tool)
        .arg(&broken)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{stderr}");
    assert!(
        stderr.contains("does not give the goldens back"),
        "{stderr}"
    );
    assert!(!out.exists());
}
