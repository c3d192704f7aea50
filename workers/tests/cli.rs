//! The `tsst` command as users call it.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tsst(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tsst"))
        .args(args)
        .current_dir(root())
        .env_remove("TSST_AMQP_URL")
        .env_remove("TSST_REDIS_URL")
        .output()
        .expect("tsst runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn config_check_accepts_every_shipped_config() {
    let mut files: Vec<String> = std::fs::read_dir(root().join("config/eval"))
        .unwrap()
        .map(|e| format!("config/eval/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    files.sort();
    files.extend([
        "config/demo.yaml".into(),
        "config/llm_verifier_config.yaml".into(),
        "config/worker.yaml".into(),
    ]);
    let mut args = vec!["config", "check"];
    args.extend(files.iter().map(String::as_str));
    let out = tsst(&args);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        text(&out).matches("ok ").count(),
        files.len(),
        "{}",
        text(&out)
    );
}

#[test]
fn config_check_names_file_and_field() {
    let out = tsst(&[
        "config",
        "check",
        "config/tests/broken/eval_branch_zero.yaml",
    ]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("config/tests/broken/eval_branch_zero.yaml") && t.contains("branch"),
        "{t}"
    );
}

#[test]
fn data_check_reports_bad_records_and_loads_the_rest() {
    let out = tsst(&[
        "data",
        "check",
        "--source",
        "vcr",
        "--root",
        "tests/fixtures/broken/vcr",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("../../etc/passwd") || t.contains("escapes"),
        "{t}"
    );
}

#[test]
fn worker_without_services_says_what_it_needs() {
    let out = tsst(&["worker", "--roles", "generator"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--amqp"), "{}", text(&out));
}
