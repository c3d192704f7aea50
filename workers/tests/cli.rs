//! The `tsst` command as users call it.
mod common;

use common::repo as root;
use std::path::Path;
use std::process::Output;

fn tsst(args: &[&str]) -> Output {
    tsst_in(&root(), args)
}

/// `tsst` run in `dir`, without services.
fn tsst_in(dir: &Path, args: &[&str]) -> Output {
    common::tsst(dir).args(args).output().expect("tsst runs")
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
        "config/demo-direct.yaml".into(),
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

/// An eval config over a fixture, written to a fresh folder.
fn eval_config(dataset: &str, fixture: &str, split: &str, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("eval.yaml"),
        format!(
            "task: multiple_choice_steps_beam\ndataset_name: {dataset}\ndataset_root: {}\ndata_subset: {split}\n{extra}models:\n  - policy_model: scripted\n    value_model: scripted\n    tag: s\n",
            root().join(fixture).display()
        ),
    )
    .unwrap();
    dir
}

/// The ids a dry run lists, in order, with their dataset-order index.
fn listed(out: &Output) -> Vec<(usize, String)> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip_while(|l| *l != "index\tid")
        .skip(1)
        .map(|l| {
            let mut f = l.split('\t');
            (
                f.next().unwrap().parse().unwrap(),
                f.next().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn dry_run_lists_vcr_ids_in_cpython_order_and_queues_nothing() {
    let cases =
        std::fs::read_to_string(root().join("tests/fixtures/vcr/cpython_order.json")).unwrap();
    let cases: serde_json::Value = serde_json::from_str(&cases).unwrap();
    let want: Vec<String> = cases["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["fixture"] == "tests/fixtures/vcr/val.jsonl" && c["seed"] == 42)
        .unwrap()["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    let dir = eval_config(
        "vcr",
        "tests/fixtures/vcr",
        "val",
        "seed: 42\ndata_partition: '1_3'\n",
    );
    let config = dir.path().join("eval.yaml");
    // Services that do not exist: a dry run never reaches them.
    for command in ["run", "enqueue"] {
        let out = tsst(&[
            command,
            "--config",
            config.to_str().unwrap(),
            "--dry-run",
            "--amqp",
            "amqp://127.0.0.1:1",
            "--redis",
            "redis://127.0.0.1:1",
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let t = text(&out);
        assert!(
            t.contains("vcr split val: 4 records, 0 bad; selected 3 (3 to run, 0 failed to load) by data_partition 1_3, seed 42"),
            "{t}"
        );
        assert!(t.contains("run eval-s: 3 questions"), "{t}");
        let expected: Vec<(usize, String)> = (1..=3).map(|i| (i, want[i].clone())).collect();
        assert_eq!(listed(&out), expected, "{t}");
    }
    assert!(!dir.path().join("runs").exists(), "nothing was run");
}

#[test]
fn dry_run_shows_bad_records_in_their_place_and_fails_when_nothing_would_run() {
    // A-OKVQA keeps file order; records 2..5 of the broken fixture are all bad.
    let dir = eval_config(
        "aokvqa",
        "tests/fixtures/broken/aokvqa",
        "val",
        "data_partition: '1_5'\n",
    );
    let config = dir.path().join("eval.yaml");
    let out = tsst(&["run", "--config", config.to_str().unwrap(), "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    let ids: Vec<String> = listed(&out).into_iter().map(|(_, id)| id).collect();
    assert_eq!(
        ids,
        [
            "brk_good_2",
            "brk_missing_question",
            "brk_answer_range",
            "brk_missing_image",
            "brk_unreadable_image"
        ]
    );
    assert!(
        text(&out).contains("brk_unreadable_image\tnot run: image unreadable"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("selected 5 (1 to run, 4 failed to load)"),
        "{}",
        text(&out)
    );

    let dir = eval_config(
        "aokvqa",
        "tests/fixtures/broken/aokvqa",
        "val",
        "data_partition: '2_5'\n",
    );
    let config = dir.path().join("eval.yaml");
    let out = tsst(&["enqueue", "--config", config.to_str().unwrap(), "--dry-run"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(listed(&out).len(), 4);
    assert!(text(&out).contains("no usable questions"), "{}", text(&out));
}

/// The results lines of an embedded run.
fn results_lines(dir: &Path, run: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("runs").join(run).join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn bad_records_fail_in_their_place_and_the_run_exits_non_zero() {
    let dir = eval_config(
        "aokvqa",
        "tests/fixtures/broken/aokvqa",
        "val",
        "data_partition: '0_5'\nnum_beams: 2\nbranch: 2\nn_consistency: 2\n",
    );
    let out = tsst_in(dir.path(), &["run", "--config", "eval.yaml", "--quiet"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("4 question(s) failed"),
        "{}",
        text(&out)
    );
    let lines = results_lines(dir.path(), "eval-s");
    let got: Vec<(&str, &str)> = lines
        .iter()
        .map(|r| {
            (
                r["question_id"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("brk_good_1", "done"),
            ("brk_good_2", "done"),
            ("brk_missing_question", "failed"),
            ("brk_answer_range", "failed"),
            ("brk_missing_image", "failed"),
            ("brk_unreadable_image", "failed"),
        ]
    );
    assert!(lines[5]["error"]
        .as_str()
        .unwrap()
        .contains("image unreadable"));
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("runs/eval-s/metrics.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(metrics["overall"]["failed"], 4, "{metrics}");
}

/// An eval config over the A-OKVQA fixture whose policy is `policy`, in `dir`.
fn eval_with_policy(dir: &Path, policy: &Path) {
    std::fs::write(
        dir.join("eval.yaml"),
        format!(
            "task: multiple_choice_steps_beam\ndataset_name: aokvqa\ndataset_root: {}\ndata_subset: val\nmodels:\n  - policy_model: {}\n    value_model: scripted\n    tag: m\n",
            root().join("tests/fixtures/aokvqa").display(),
            policy.display()
        ),
    )
    .unwrap();
}

#[test]
fn a_run_whose_questions_all_fail_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    // A model directory whose manifest cannot be read: every question's load fails.
    let model = dir.path().join("broken-model");
    std::fs::create_dir(&model).unwrap();
    std::fs::write(model.join("manifest.json"), "{").unwrap();
    eval_with_policy(dir.path(), &model);
    let out = tsst_in(dir.path(), &["run", "--config", "eval.yaml", "--quiet"]);
    assert!(!out.status.success(), "{}", text(&out));
    let lines = results_lines(dir.path(), "eval-m");
    assert_eq!(lines.len(), 6);
    assert!(lines.iter().all(|r| r["status"] == "failed"), "{lines:?}");
    assert!(
        text(&out).contains("6 question(s) failed"),
        "{}",
        text(&out)
    );
}

/// A model directory that does not exist is named, with its field, before an embedded
/// run starts (nothing is written); `tsst config check` warns about it, since a
/// cluster's workers may have it where the checking machine does not.
#[test]
fn a_missing_model_stops_an_embedded_run_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    eval_with_policy(dir.path(), &dir.path().join("no-such-model"));
    let out = tsst_in(dir.path(), &["run", "--config", "eval.yaml", "--quiet"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("models[0].policy_model:") && text(&out).contains("does not exist"),
        "{}",
        text(&out)
    );
    assert!(!dir.path().join("runs").exists(), "nothing runs");
    let check = tsst_in(dir.path(), &["config", "check", "eval.yaml"]);
    assert!(check.status.success(), "{}", text(&check));
    assert!(
        text(&check).contains("warning: models[0].policy_model:"),
        "{}",
        text(&check)
    );
    // The models are checked before the dataset is read: with no dataset there either,
    // the refusal still names the model.
    let fixtures = root().join("tests/fixtures/aokvqa").display().to_string();
    let yaml = std::fs::read_to_string(dir.path().join("eval.yaml")).unwrap();
    std::fs::write(
        dir.path().join("eval.yaml"),
        yaml.replace(&fixtures, "no-such-dataset"),
    )
    .unwrap();
    let out = tsst_in(dir.path(), &["run", "--config", "eval.yaml", "--quiet"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("models[0].policy_model:") && !text(&out).contains("no-such-dataset"),
        "{}",
        text(&out)
    );
}

/// A temporary directory with `n` synthetic questions (seed 3) under `synth/`.
fn synth_dir(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let n = n.to_string();
    let synth = tsst_in(
        dir.path(),
        &["data", "synth", "--out", "synth", "--n", &n, "--seed", "3"],
    );
    assert!(synth.status.success(), "{}", text(&synth));
    dir
}

/// On the synthetic benchmark every verdict says whether the chain's steps are facts
/// of the scene (`grounded`), the metrics show the share (`faithful`), and with
/// `verifier: scene` a right answer reached through other steps is not correct. The
/// scripted policy's steps ("I count the shapes ...") are no scene's facts.
#[test]
fn the_scene_verifier_judges_the_steps_as_well_as_the_answer() {
    let dir = synth_dir(12);
    let (mut correct, mut ungrounded_notes) = (Vec::new(), 0);
    for verifier in ["answer", "scene"] {
        let config = format!(
            "task: multiple_choice_steps_beam\ndataset_name: aokvqa\ndataset_root: synth\n\
             data_subset: train\ndata_partition: '0_5'\nnum_beams: 2\nbranch: 2\n\
             n_consistency: 3\nverifier: {verifier}\nmodels:\n  - {{policy_model: scripted, \
             value_model: scripted, tag: {verifier}, run_flag: true, use_value: true}}\n"
        );
        std::fs::write(dir.path().join("eval.yaml"), config).unwrap();
        let out = tsst_in(
            dir.path(),
            &["run", "--config", "eval.yaml", "--run", verifier, "--quiet"],
        );
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("faithful"), "{}", text(&out));
        let mut right = 0;
        for line in results_lines(dir.path(), verifier) {
            for s in line["solutions"].as_array().unwrap() {
                let v = &s["verdict"];
                assert_eq!(v["grounded"], false, "{s}");
                right += usize::from(v["correct"] == true);
                if v["note"]
                    .as_str()
                    .is_some_and(|n| n.contains("not grounded"))
                {
                    assert_eq!(verifier, "scene");
                    ungrounded_notes += 1;
                }
            }
        }
        let metrics: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("runs").join(verifier).join("metrics.json"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(metrics["overall"]["faithful"], 0.0, "{metrics}");
        correct.push(right);
    }
    assert!(correct[0] > 0, "the scripted answers are sometimes right");
    assert_eq!(correct[1], 0, "none through ungrounded steps");
    assert_eq!(
        ungrounded_notes, correct[0],
        "each right answer says why it no longer counts"
    );
}

/// SIGTERM in the middle of an embedded run (its store lives only in the process):
/// what finished is written, the rest as `pending` (counted apart in the metrics),
/// and the command fails saying so.
#[cfg(unix)]
#[test]
fn an_interrupted_run_writes_what_finished_and_exits_non_zero() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = synth_dir(200);
    // 30 ms a model call: the run takes far longer than the test waits.
    std::fs::write(
        dir.path().join("eval.yaml"),
        "task: multiple_choice_steps_beam\ndataset_name: aokvqa\ndataset_root: synth\n\
         data_subset: train\nnum_beams: 2\nbranch: 2\nn_consistency: 2\nmodels:\n  - \
         {policy_model: 'scripted:30ms', value_model: 'scripted:30ms', tag: s, \
         run_flag: true, use_value: true}\n",
    )
    .unwrap();
    // Not --quiet: stderr is a pipe, so the progress goes to the log instead of a bar.
    let mut child = common::tsst(dir.path())
        .args(["run", "--config", "eval.yaml"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The progress line says when the first questions are done.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    while !log.contains("questions finished") {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the run ended before any progress line: {log}"
        );
        log.push_str(&line);
    }
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{log}{rest}", String::from_utf8_lossy(&out.stdout));
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("interrupted after"), "{said}");
    let lines = results_lines(dir.path(), "eval-s");
    let status = |s: &str| lines.iter().filter(|r| r["status"] == s).count();
    let (done, pending) = (status("done"), status("pending"));
    assert!(done >= 1 && pending >= 1, "done {done}, pending {pending}");
    assert_eq!(done + pending + status("failed"), lines.len());
    assert!(
        said.contains(&format!("{done} of {} questions", lines.len())),
        "{said}"
    );
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("runs/eval-s/metrics.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(metrics["overall"]["questions"], done, "{metrics}");
    assert_eq!(metrics["overall"]["pending"], pending, "{metrics}");
}
