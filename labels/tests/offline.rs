//! `tsst label` end to end on a hand-written results file: the D+ and Dv files must
//! be LLaVA training JSON with the record counts and values the trees imply.
use serde_json::Value;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use tsst_labels::offline::{run_offline, OfflineArgs, OfflineError};
use tsst_messages::results::{QuestionResult, QuestionStatus, Solution};
use tsst_messages::{DataSource, FinishReason, NodeId, Verdict, VerdictSource};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn solution(steps: &[&str], correct: bool) -> Solution {
    let steps: Vec<String> = steps.iter().map(|s| s.to_string()).collect();
    Solution {
        node: NodeId(7),
        text: steps.join(" "),
        values: vec![Some(0.5); steps.len()],
        steps,
        value: Some(0.5),
        mean_logprob: -0.3,
        finish: FinishReason::Answer,
        verdict: Some(Verdict {
            correct,
            extracted: String::new(),
            letter: None,
            by: VerdictSource::Rule,
            note: None,
            grounded: None,
        }),
    }
}

fn question(
    id: &str,
    source: DataSource,
    image: Option<&str>,
    status: QuestionStatus,
    solutions: Vec<Solution>,
) -> QuestionResult {
    QuestionResult {
        run: "r1".to_string(),
        question_id: id.to_string(),
        source,
        image: image.map(PathBuf::from),
        question: "Which animal is shown?".to_string(),
        context: None,
        choices: vec!["fish".into(), "whale".into(), "plant".into(), "dog".into()],
        answer: 1,
        status,
        error: None,
        rounds: 3,
        restarts: 0,
        solutions,
    }
}

// The results file, line by line:
// 1. aokvqa q1, done, with an image. Tree:
//    root ─ fins ─ air ─ "Final Answer: B."          (correct)
//         │      │     └ "Final Answer: (B) whale."  (correct)
//         │      └ fish ─ "Final Answer: A."         (wrong)
//         └ barks ─ "Final Answer: A."               (wrong)
//    8 nodes. m: both answers 0, air 1, fins 2, root 3; fish and its answer inherit
//    fins' 2, barks and its answer the root's 3.
//    v(fins) = 1/3; v(air) = 1/3 + (2/3)/2 = 2/3; v(answers under air) = 1;
//    v(fish) = 1/3 - (2/3)/3 = 1/9; v(its answer) = max(1/9 - (8/9)/3, 0) = 0;
//    v(barks) = max(0 - 1/4, 0) = 0; v(its answer) = max(0 - 1/4, 0) = 0.
//    D+ (k = 1): the first correct solution.
// 2. not JSON (a bad line).
// 3. scienceqa q2, done, text only, all wrong: no records.
// 4. (blank)
// 5. scienceqa q3, done, text only, one correct 2-step chain: D+ 1; Dv 2 (1/2, 1).
// 6. vcr q4, failed: skipped.
// 7. vcr q5, pending: skipped.
// 8. scienceqa q3 again: a bad line.
fn write_results(path: &Path) -> TestResult {
    let q1 = question(
        "q1",
        DataSource::Aokvqa,
        Some("/data/coco/val2017/000000000001.jpg"),
        QuestionStatus::Done,
        vec![
            solution(
                &[
                    "The animal has fins.",
                    "It breathes air.",
                    "Final Answer: B.",
                ],
                true,
            ),
            solution(
                &["The animal has fins.", "It is a fish.", "Final Answer: A."],
                false,
            ),
            solution(&["The animal barks.", "Final Answer: A."], false),
            solution(
                &[
                    "The animal has fins.",
                    "It breathes air.",
                    "Final Answer: (B) whale.",
                ],
                true,
            ),
        ],
    );
    let q2 = question(
        "q2",
        DataSource::Scienceqa,
        None,
        QuestionStatus::Done,
        vec![solution(&["Final Answer: A."], false)],
    );
    let q3 = question(
        "q3",
        DataSource::Scienceqa,
        None,
        QuestionStatus::Done,
        vec![solution(&["Whales breathe air.", "Final Answer: B."], true)],
    );
    let mut q4 = question("q4", DataSource::Vcr, None, QuestionStatus::Failed, vec![]);
    q4.error = Some("image missing".to_string());
    let q5 = question(
        "q5",
        DataSource::Vcr,
        None,
        QuestionStatus::Pending,
        vec![solution(&["Final Answer: B."], true)],
    );
    let mut f = fs::File::create(path)?;
    writeln!(f, "{}", serde_json::to_string(&q1)?)?;
    writeln!(f, "{{\"run\": \"r1\", broken")?;
    writeln!(f, "{}", serde_json::to_string(&q2)?)?;
    writeln!(f)?;
    writeln!(f, "{}", serde_json::to_string(&q3)?)?;
    writeln!(f, "{}", serde_json::to_string(&q4)?)?;
    writeln!(f, "{}", serde_json::to_string(&q5)?)?;
    writeln!(f, "{}", serde_json::to_string(&q3)?)?;
    Ok(())
}

/// Checks the LLaVA shape of one record and returns (id, image, human, gpt, value).
fn llava(record: &Value) -> (String, Option<String>, String, String, Option<f64>) {
    let obj = record.as_object().expect("a record is an object");
    for key in obj.keys() {
        assert!(
            ["id", "image", "conversations", "value"].contains(&key.as_str()),
            "unexpected key {key}"
        );
    }
    let turns = obj["conversations"].as_array().expect("conversations");
    assert_eq!(turns.len(), 2);
    assert_eq!(turns[0]["from"], "human");
    assert_eq!(turns[1]["from"], "gpt");
    (
        obj["id"].as_str().expect("id").to_string(),
        obj.get("image")
            .map(|i| i.as_str().expect("image").to_string()),
        turns[0]["value"].as_str().expect("human").to_string(),
        turns[1]["value"].as_str().expect("gpt").to_string(),
        obj.get("value").map(|v| v.as_f64().expect("value")),
    )
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn labels_a_results_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("results.jsonl");
    write_results(&input)?;
    let mut args = OfflineArgs::new(
        input.clone(),
        dir.path().join("dv.json"),
        dir.path().join("dplus.json"),
    );
    args.image_root = Some(PathBuf::from("/data/coco"));
    let report = run_offline(&args)?;

    assert_eq!(report.lines, 7);
    let bad: Vec<usize> = report.bad_lines.iter().map(|b| b.line).collect();
    assert_eq!(bad, [2, 8]);
    assert_eq!(report.labelled, 3);
    assert_eq!((report.skipped_failed, report.skipped_pending), (1, 1));
    assert_eq!((report.policy_records, report.value_records), (2, 10));
    let per: Vec<(DataSource, usize, usize, usize)> = report
        .per_source
        .iter()
        .map(|c| (c.source, c.labelled, c.policy_records, c.value_records))
        .collect();
    assert_eq!(
        per,
        [
            (DataSource::Aokvqa, 1, 1, 8),
            (DataSource::Scienceqa, 2, 1, 2)
        ]
    );
    // Metrics: 3 counted questions (q1, q2, q3), q4 failed, q5 still pending.
    assert_eq!(report.metrics.overall.questions, 3);
    assert_eq!(report.metrics.overall.failed, 1);
    assert_eq!(report.metrics.overall.pending, 1);
    assert!(report.to_string().contains("line 2:"));

    // D+
    let dplus: Vec<Value> = serde_json::from_str(&fs::read_to_string(&args.policy_out)?)?;
    assert_eq!(dplus.len(), 2);
    let (id, image, human, gpt, value) = llava(&dplus[0]);
    assert_eq!(id, "aokvqa/q1/plus/0");
    assert_eq!(image.as_deref(), Some("val2017/000000000001.jpg"));
    assert!(human.starts_with("<image>\n"));
    assert!(human.ends_with("Options:\nA. fish\nB. whale\nC. plant\nD. dog"));
    assert_eq!(
        gpt,
        "The animal has fins. It breathes air. Final Answer: B."
    );
    assert_eq!(value, None);
    let (id, image, human, _, _) = llava(&dplus[1]);
    assert_eq!(id, "scienceqa/q3/plus/0");
    assert_eq!(image, None);
    assert!(!human.contains("<image>"));

    // Dv
    let dv: Vec<Value> = serde_json::from_str(&fs::read_to_string(&args.value_out)?)?;
    assert_eq!(dv.len(), 10);
    let expected = [
        ("aokvqa/q1/value/0", "The animal has fins.", 1.0 / 3.0),
        (
            "aokvqa/q1/value/0.0",
            "The animal has fins. It breathes air.",
            2.0 / 3.0,
        ),
        (
            "aokvqa/q1/value/0.0.0",
            "The animal has fins. It breathes air. Final Answer: B.",
            1.0,
        ),
        (
            "aokvqa/q1/value/0.1",
            "The animal has fins. It is a fish.",
            1.0 / 9.0,
        ),
        (
            "aokvqa/q1/value/0.1.0",
            "The animal has fins. It is a fish. Final Answer: A.",
            0.0,
        ),
        ("aokvqa/q1/value/1", "The animal barks.", 0.0),
        (
            "aokvqa/q1/value/1.0",
            "The animal barks. Final Answer: A.",
            0.0,
        ),
        (
            "aokvqa/q1/value/0.0.1",
            "The animal has fins. It breathes air. Final Answer: (B) whale.",
            1.0,
        ),
        ("scienceqa/q3/value/0", "Whales breathe air.", 0.5),
        (
            "scienceqa/q3/value/0.0",
            "Whales breathe air. Final Answer: B.",
            1.0,
        ),
    ];
    for (record, (want_id, want_text, want_value)) in dv.iter().zip(expected) {
        let (id, _, _, gpt, value) = llava(record);
        assert_eq!(id, want_id);
        assert_eq!(gpt, want_text, "{id}");
        let value = value.expect("Dv records carry a value");
        assert!(close(value, want_value), "{id}: {value} != {want_value}");
    }
    Ok(())
}

#[test]
fn jsonl_and_k() -> TestResult {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("results.jsonl");
    write_results(&input)?;
    let mut args = OfflineArgs::new(
        input,
        dir.path().join("dv.jsonl"),
        dir.path().join("dplus.jsonl"),
    );
    args.k = 2;
    args.jsonl = true;
    let report = run_offline(&args)?;
    // q1 has two correct solutions now both kept; q3 one.
    assert_eq!(report.policy_records, 3);
    let text = fs::read_to_string(&args.policy_out)?;
    let records: Vec<Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(records.len(), 3);
    let (id, image, _, gpt, _) = llava(&records[1]);
    assert_eq!(id, "aokvqa/q1/plus/1");
    // No image root: the path as the results file has it.
    assert_eq!(
        image.as_deref(),
        Some("/data/coco/val2017/000000000001.jpg")
    );
    assert!(gpt.ends_with("Final Answer: (B) whale."));
    let dv_lines = fs::read_to_string(&args.value_out)?.lines().count();
    assert_eq!(dv_lines, 10);
    Ok(())
}

#[test]
fn image_outside_root_writes_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("results.jsonl");
    write_results(&input)?;
    let mut args = OfflineArgs::new(
        input,
        dir.path().join("dv.json"),
        dir.path().join("dplus.json"),
    );
    args.image_root = Some(PathBuf::from("/elsewhere"));
    let err = run_offline(&args).expect_err("the image is outside the root");
    assert!(
        matches!(err, OfflineError::Question { line: 1, .. }),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains("results.jsonl"), "{message}");
    assert!(message.contains("/elsewhere"), "{message}");
    assert!(!args.value_out.exists());
    assert!(!args.policy_out.exists());
    Ok(())
}
