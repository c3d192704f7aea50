//! Every configuration file shipped with tsst passes `tsst config check`, and what it
//! says survives a write/read round trip.
use std::path::{Path, PathBuf};
use tsst_config::{
    check_file, check_file_with_warnings, ConfigKind, EvalConfig, ModelRef, Partition, Task,
    TrainerConfig, VerifierConfig, WorkerConfig,
};

fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn eval_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(config_dir().join("eval"))
        .expect("config/eval is readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_eval_config_passes_check() {
    let files = eval_files();
    assert_eq!(
        files.len(),
        6,
        "expected three datasets x (beam, direct): {files:?}"
    );
    for path in files {
        let (kind, warnings) = check_file_with_warnings(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(kind, ConfigKind::Eval, "{}", path.display());
        let c = EvalConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.warnings().is_empty(), "{}: {warnings:?}", path.display());
        // They name the directories a user exports the checkpoints to (checkpoints/...),
        // which a fresh clone lacks: `config check` says so for each, and nothing else.
        let missing = c.missing_models();
        assert!(!missing.is_empty(), "{}", path.display());
        assert_eq!(
            warnings.len(),
            missing.len(),
            "{}: {warnings:?}",
            path.display()
        );
        assert!(
            missing.iter().all(|i| i.rule.contains("checkpoints/")),
            "{}: {missing:?}",
            path.display()
        );
        let name = path.file_stem().unwrap_or_default().to_string_lossy();
        assert!(name.starts_with(c.dataset_name.name()), "{name}");
        if name.ends_with("_direct") {
            assert_eq!(c.task, Task::MultipleChoiceDirect);
            assert_eq!((c.num_beams, c.do_sample), (1, false));
        } else {
            assert_eq!(c.task, Task::MultipleChoiceStepsBeam);
            assert_eq!((c.num_beams, c.branch, c.n_consistency), (3, 3, 5));
            assert_eq!(c.temperature, 0.7);
        }
        assert_eq!(c.data_partition, Some(Partition { start: 0, end: 999 }));
        assert!(c.active_models().count() >= 1);
    }
}

#[test]
fn demo_configs_compare_direct_and_beam_on_the_same_questions() {
    let load = |name: &str| {
        let path = config_dir().join(name);
        assert_eq!(
            check_file(&path).unwrap_or_else(|e| panic!("{e}")),
            ConfigKind::Eval
        );
        EvalConfig::load(&path).unwrap_or_else(|e| panic!("{e}"))
    };
    let (beam, direct) = (load("demo.yaml"), load("demo-direct.yaml"));
    assert_eq!(beam.task, Task::MultipleChoiceStepsBeam);
    assert_eq!(direct.task, Task::MultipleChoiceDirect);
    // The reference search settings, on the same 50 questions.
    assert_eq!((beam.num_beams, beam.branch, beam.n_consistency), (5, 5, 7));
    for c in [&beam, &direct] {
        assert_eq!(c.dataset_root, Path::new("data/demo"));
        assert_eq!(c.data_subset, "test");
        assert_eq!(c.data_partition.map(|p| p.len()), Some(50));
        assert_eq!(
            c.models[0].policy_model,
            ModelRef::Path("models/demo/policy".into())
        );
    }
    assert_eq!(
        beam.models[0].value_model,
        Some(ModelRef::Path("models/demo/value".into()))
    );
}

#[test]
fn verifier_and_worker_configs_pass_check() {
    let v = config_dir().join("llm_verifier_config.yaml");
    assert_eq!(
        check_file(&v).unwrap_or_else(|e| panic!("{e}")),
        ConfigKind::Verifier
    );
    let vc = VerifierConfig::load(&v).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(vc, VerifierConfig::default());

    let w = config_dir().join("worker.yaml");
    assert_eq!(
        check_file(&w).unwrap_or_else(|e| panic!("{e}")),
        ConfigKind::Worker
    );
    let wc = WorkerConfig::load(&w).unwrap_or_else(|e| panic!("{e}"));
    assert!(wc.is_embedded());
}

#[test]
fn shipped_configs_round_trip() {
    let origin = Path::new("round-trip.yaml");
    for path in eval_files()
        .into_iter()
        .chain(["demo.yaml", "demo-direct.yaml"].map(|f| config_dir().join(f)))
    {
        let c = EvalConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let text = c.to_yaml().unwrap_or_else(|e| panic!("{e}"));
        let again = EvalConfig::from_yaml_str(&text, origin).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again, c, "{}:\n{text}", path.display());
    }
    let v = VerifierConfig::load(&config_dir().join("llm_verifier_config.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let text = v.to_yaml().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(VerifierConfig::from_yaml_str(&text, origin).ok(), Some(v));
    let w = WorkerConfig::load(&config_dir().join("worker.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let text = w.to_yaml().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(WorkerConfig::from_yaml_str(&text, origin).ok(), Some(w));
}

#[test]
fn relative_paths_are_kept_as_written() {
    let c = EvalConfig::load(&config_dir().join("eval/aokvqa_beam.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.dataset_root, Path::new("data/aokvqa"));
    assert_eq!(
        c.models[0].policy_model,
        ModelRef::Path(PathBuf::from("checkpoints/llava-v1.5-7b-policy-onnx"))
    );
}

#[test]
fn missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("nope.yaml");
    let msg = EvalConfig::load(&path).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!("{}: cannot read", path.display())),
        "{msg}"
    );
    let msg = check_file(dir.path()).unwrap_err().to_string();
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
}

#[test]
fn the_trainer_config_passes_check_and_trains_from_each_parent() {
    let t = config_dir().join("trainer.yaml");
    assert_eq!(
        check_file(&t).unwrap_or_else(|e| panic!("{e}")),
        ConfigKind::Trainer
    );
    let c = TrainerConfig::load(&t).unwrap_or_else(|e| panic!("{e}"));
    // Each round trains from the models the round starts from, not from the base.
    assert!(c.stages[0].args.iter().any(|a| a == "{parent_policy}"));
    assert!(c.stages[1].args.iter().any(|a| a == "{parent_value}"));
}
