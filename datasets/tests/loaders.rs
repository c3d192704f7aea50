//! Loaders, selection and checking against the committed fixtures in `tests/fixtures`.
use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use tsst_datasets::select::{partition, sample, vcr_order};
use tsst_datasets::{
    check, load, load_selection, shard, shard_of, BadRecord, DatasetError, Loaded, Selection,
};
use tsst_messages::{DataSource, Question};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn ids(questions: &[Question]) -> Vec<&str> {
    questions.iter().map(|q| q.id.as_str()).collect()
}

/// Asserts that `bad` holds exactly the expected ids, each with a reason containing
/// the expected word.
fn assert_bad(bad: &[BadRecord], expected: &[(&str, &str)]) {
    assert_eq!(
        bad.len(),
        expected.len(),
        "bad records: {bad:#?}, expected {expected:?}"
    );
    for (id, word) in expected {
        let record = bad
            .iter()
            .find(|b| b.id == *id && b.reason.contains(word))
            .unwrap_or_else(|| panic!("no bad record {id} with `{word}` in {bad:#?}"));
        assert!(!record.reason.is_empty());
    }
}

fn load_fixture(source: DataSource, dir: &str, split: &str) -> Result<Loaded, DatasetError> {
    load(source, &fixtures().join(dir), split)
}

#[test]
fn aokvqa_fixture_loads() -> TestResult {
    let loaded = load_fixture(DataSource::Aokvqa, "aokvqa", "val")?;
    assert!(loaded.bad.is_empty(), "{:#?}", loaded.bad);
    assert_eq!(loaded.questions.len(), 6);
    let q = &loaded.questions[0];
    assert_eq!(q.id, "22MexNkBPpdZGX6sxbxVBH");
    assert_eq!(q.source, DataSource::Aokvqa);
    assert_eq!(q.answer_text(), "cab");
    assert_eq!(q.rationales.len(), 3);
    let image = q.image.as_deref().ok_or("no image")?;
    assert!(image.ends_with("val2017/000000461751.jpg"));
    assert!(image.is_absolute());
    Ok(())
}

#[test]
fn aokvqa_unknown_split_names_the_file_and_available_splits() {
    let err = load_fixture(DataSource::Aokvqa, "aokvqa", "train").err();
    let Some(err @ DatasetError::UnknownSplit { .. }) = err else {
        panic!("expected UnknownSplit, got {err:?}");
    };
    let msg = err.to_string();
    assert!(msg.contains("aokvqa_v1p0_train.json"), "{msg}");
    assert!(msg.contains("available: val"), "{msg}");
}

#[test]
fn invalid_split_names_are_refused() {
    let err = load_fixture(DataSource::Vcr, "vcr", "../vcr/val").err();
    assert!(matches!(err, Some(DatasetError::InvalidSplitName { .. })));
}

#[test]
fn missing_root_is_an_error_naming_it() {
    let err = load(DataSource::Aokvqa, Path::new("/no/such/root"), "val").err();
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("/no/such/root"), "{msg}");
}

#[test]
fn aokvqa_broken_reports_each_bad_record() -> TestResult {
    let loaded = load_fixture(DataSource::Aokvqa, "broken/aokvqa", "val")?;
    assert_eq!(ids(&loaded.questions), ["brk_good_1", "brk_good_2"]);
    assert_bad(
        &loaded.bad,
        &[
            ("brk_missing_question", "missing field `question`"),
            ("brk_answer_range", "out of range"),
            ("brk_missing_image", "image missing"),
            ("brk_unreadable_image", "image unreadable"),
            ("brk_good_1", "duplicate"),
            ("brk_no_answer", "correct_choice_idx"),
            ("#8", "missing field `question_id`"),
            ("brk_empty_choices", "empty choices"),
            ("brk_bad_type", "invalid type"),
        ],
    );
    // Bad records keep their place in file order (the duplicate has none): '2_5'
    // names the four records after the good ones, not two of them and two later ones.
    let sel = Selection {
        partition: Some("2_5".into()),
        ..Selection::all("val", 0)
    };
    let part = load_selection(DataSource::Aokvqa, &fixtures().join("broken/aokvqa"), &sel)?;
    assert!(part.questions.is_empty());
    assert_eq!(
        part.failed
            .iter()
            .map(|b| b.id.as_str())
            .collect::<Vec<_>>(),
        [
            "brk_missing_question",
            "brk_answer_range",
            "brk_missing_image",
            "brk_unreadable_image"
        ]
    );
    assert_eq!((part.split_records, part.split_bad.len()), (11, 9));
    Ok(())
}

#[test]
fn aokvqa_file_that_is_not_json_fails_whole() -> TestResult {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("aokvqa_v1p0_val.json"),
        "[{\"question_id\": ",
    )?;
    let err = load(DataSource::Aokvqa, dir.path(), "val").err();
    let Some(err @ DatasetError::Json { .. }) = err else {
        panic!("expected Json error, got {err:?}");
    };
    assert!(err.to_string().contains("aokvqa_v1p0_val.json"));

    std::fs::write(dir.path().join("aokvqa_v1p0_val.json"), "{}")?;
    let err = load(DataSource::Aokvqa, dir.path(), "val").err();
    assert!(matches!(err, Some(DatasetError::Format { .. })), "{err:?}");
    Ok(())
}

#[test]
fn scienceqa_fixture_loads_with_and_without_images() -> TestResult {
    let test = load_fixture(DataSource::Scienceqa, "scienceqa", "test")?;
    assert!(test.bad.is_empty(), "{:#?}", test.bad);
    assert_eq!(ids(&test.questions), ["5", "11", "23", "41", "57"]);
    let with_image = test.questions.iter().filter(|q| q.image.is_some()).count();
    assert_eq!(with_image, 3);

    let q11 = &test.questions[1];
    assert!(q11
        .context
        .as_deref()
        .is_some_and(|c| c.contains("ping pong")));
    assert_eq!(q11.rationales.len(), 1);
    // An empty hint is no context.
    assert_eq!(test.questions[0].context, None);

    let train = load_fixture(DataSource::Scienceqa, "scienceqa", "train")?;
    assert_eq!(ids(&train.questions), ["1", "2"]);

    // A derived split keeps its own order and finds images under the problem's split.
    let mini = load_fixture(DataSource::Scienceqa, "scienceqa", "minitest")?;
    assert_eq!(ids(&mini.questions), ["41", "5"]);
    let image = mini.questions[1].image.as_deref().ok_or("no image")?;
    assert!(image.ends_with("images/test/5/image.png"));
    Ok(())
}

#[test]
fn scienceqa_unknown_split_lists_available() {
    let err = load_fixture(DataSource::Scienceqa, "scienceqa", "val").err();
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("pid_splits.json"), "{msg}");
    assert!(msg.contains("available: train, test, minitest"), "{msg}");
}

#[test]
fn scienceqa_broken_reports_each_bad_record() -> TestResult {
    let loaded = load_fixture(DataSource::Scienceqa, "broken/scienceqa", "test")?;
    assert_eq!(ids(&loaded.questions), ["100", "101"]);
    assert_bad(
        &loaded.bad,
        &[
            ("102", "missing field `choices`"),
            ("103", "out of range"),
            ("104", "image missing"),
            ("105", "image unreadable"),
            ("106", "escapes"),
            ("107", "missing problem"),
            ("108", "empty choices"),
            ("101", "duplicate"),
        ],
    );
    Ok(())
}

#[test]
fn vcr_fixture_renders_every_reference_with_positions() -> TestResult {
    let loaded = load_fixture(DataSource::Vcr, "vcr", "val")?;
    assert!(loaded.bad.is_empty(), "{:#?}", loaded.bad);
    assert_eq!(ids(&loaded.questions), ["val-0", "val-1", "val-2", "val-3"]);

    let q0 = &loaded.questions[0];
    assert_eq!(
        q0.question,
        "Why are person1 (on the left) and person2 (on the right) standing next to car1?"
    );
    assert_eq!(
        q0.choices[1],
        "person1 (on the left) is about to fix car1's engine."
    );
    assert_eq!(
        q0.rationales,
        ["person1 (on the left) and person2 (on the right) are looking down the road and checking the time."]
    );
    assert_eq!(q0.choices.len(), 4);

    let q2 = &loaded.questions[2];
    assert_eq!(
        q2.question,
        "What will person1 (on the left), person2 (in the middle) and person3 (on the right) do with dog1 next?"
    );
    assert_eq!(q2.answer_text(), "Take dog1 for a walk.");

    let q3 = &loaded.questions[3];
    assert_eq!(q3.answer, 3);
    assert_eq!(q3.answer_text(), "To the store.");
    Ok(())
}

#[test]
fn vcr_broken_reports_each_bad_record() -> TestResult {
    let loaded = load_fixture(DataSource::Vcr, "broken/vcr", "val")?;
    assert_eq!(ids(&loaded.questions), ["val-100", "val-101"]);
    // Unreadable metadata only drops the positions.
    assert_eq!(
        loaded.questions[0].question,
        "Is person1 (on the left) and person2 (on the right) happy?"
    );
    assert_eq!(loaded.questions[1].question, "Is person2 sad?");
    assert_bad(
        &loaded.bad,
        &[
            ("val-102", "missing field `img_fn`"),
            ("val-103", "out of range"),
            ("val-104", "escapes"),
            ("val-105", "escapes"),
            ("val-106", "image missing"),
            ("val-107", "image unreadable"),
            ("val-108", "object reference 5 out of range"),
            ("line 10", "not JSON"),
            ("val-100", "duplicate"),
            ("val-111", "object reference 3 out of range"),
        ],
    );
    Ok(())
}

fn numbered(n: usize) -> Vec<Question> {
    (0..n)
        .map(|i| Question {
            id: format!("q{i}"),
            source: DataSource::Aokvqa,
            image: None,
            question: format!("question {i}?"),
            choices: vec!["yes".into(), "no".into()],
            answer: 0,
            rationales: Vec::new(),
            context: None,
        })
        .collect()
}

#[test]
fn partition_is_inclusive() -> TestResult {
    let picked = partition(numbered(10), "2_4", "val")?;
    assert_eq!(ids(&picked), ["q2", "q3", "q4"]);
    assert_eq!(ids(&partition(numbered(10), "0_0", "val")?), ["q0"]);
    assert_eq!(partition(numbered(10), "0_9", "val")?.len(), 10);
    Ok(())
}

#[test]
fn partition_past_the_end_names_the_available_range() {
    let err = partition(numbered(300), "440_499", "val").err();
    assert_eq!(
        err.map(|e| e.to_string()).as_deref(),
        Some("data_partition 440_499 is past the end: split val has 300 questions (0_299)")
    );
    let err = partition(numbered(10), "5_10", "val").err();
    assert!(matches!(
        err,
        Some(DatasetError::PartitionPastEnd { len: 10, .. })
    ));
    let err = partition(numbered(10), "5-7", "val").err();
    assert!(matches!(err, Some(DatasetError::BadPartition { .. })));
}

#[test]
fn sample_is_deterministic_and_keeps_order() -> TestResult {
    let a = sample(numbered(50), 10, 7, "val")?;
    let b = sample(numbered(50), 10, 7, "val")?;
    assert_eq!(a, b);
    assert_eq!(a.len(), 10);
    let positions: Vec<usize> = a
        .iter()
        .map(|q| q.id[1..].parse::<usize>())
        .collect::<Result<_, _>>()?;
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    let c = sample(numbered(50), 10, 8, "val")?;
    assert_ne!(ids(&a), ids(&c));
    assert_eq!(sample(numbered(5), 5, 1, "val")?.len(), 5);

    let err = sample(numbered(5), 6, 1, "val").err();
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("sample_size 6") && msg.contains("5 questions"),
        "{msg}"
    );
    Ok(())
}

/// Orders CPython 3.11 computed with `tools/cpython_vcr_order.py`.
fn cpython_cases() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(fixtures().join("vcr/cpython_order.json")).unwrap();
    let file: serde_json::Value = serde_json::from_str(&text).unwrap();
    file["cases"].as_array().unwrap().clone()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn vcr_order_is_cpythons_sorted_then_shuffled() {
    let cases = cpython_cases();
    let mut generated = 0;
    for case in &cases {
        let seed = case["seed"].as_u64().unwrap();
        if case.get("generated").is_none() {
            continue;
        }
        // File order is reversed: only the sort decides what the shuffle starts from.
        let mut ids: Vec<String> = (0..26534).rev().map(|i| format!("val-{i}")).collect();
        vcr_order(&mut ids, seed);
        assert_eq!(ids[..40], strings(&case["head"]), "seed {seed}");
        assert_eq!(ids[ids.len() - 10..], strings(&case["tail"]), "seed {seed}");
        generated += 1;
    }
    assert_eq!(generated, 2);
}

#[test]
fn selection_applies_vcr_order_then_partition_then_drops_bad_records() -> TestResult {
    let cases = cpython_cases();
    let mut checked = 0;
    for case in &cases {
        let Some(fixture) = case["fixture"].as_str() else {
            continue;
        };
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(fixture)
            .parent()
            .unwrap()
            .to_path_buf();
        let seed = case["seed"].as_u64().unwrap();
        let expected = strings(&case["order"]);
        let all = load_selection(DataSource::Vcr, &root, &Selection::all("val", seed))?;
        assert_eq!(all.ids, expected, "{fixture} seed {seed}");
        let loaded: Vec<&String> = expected
            .iter()
            .filter(|id| all.questions.iter().any(|q| &q.id == *id))
            .collect();
        assert_eq!(ids(&all.questions), loaded, "questions keep the order");
        assert_eq!(all.questions.len() + all.failed.len(), expected.len());

        // A partition indexes every record with an id, bad ones included.
        let sel = Selection {
            split: "val".into(),
            partition: Some("1_2".into()),
            sample_size: None,
            seed,
        };
        let part = load_selection(DataSource::Vcr, &root, &sel)?;
        assert_eq!(part.ids, expected[1..=2], "{fixture} seed {seed}");
        for id in &expected[1..=2] {
            let good = part.questions.iter().any(|q| &q.id == id);
            let bad = part.failed.iter().any(|b| &b.id == id);
            assert!(good != bad, "{id} is either run or reported");
        }
        checked += 1;
    }
    assert_eq!(checked, 8);

    // The broken split: 12 lines, of which the unreadable line and the duplicate have
    // no place of their own.
    let broken = load_selection(
        DataSource::Vcr,
        &fixtures().join("broken/vcr"),
        &Selection::all("val", 0),
    )?;
    assert_eq!((broken.split_records, broken.ids.len()), (12, 10));
    assert_eq!(broken.questions.len(), 2);
    assert_eq!(broken.failed.len(), 8);
    assert!(broken
        .failed
        .iter()
        .any(|b| b.id == "val-107" && b.reason.contains("image unreadable")));

    let root = fixtures().join("vcr");
    let sel = Selection {
        split: "val".into(),
        partition: Some("2_4".into()),
        sample_size: None,
        seed: 11,
    };
    let err = load_selection(DataSource::Vcr, &root, &sel).err();
    assert_eq!(
        err.map(|e| e.to_string()).as_deref(),
        Some("data_partition 2_4 is past the end: split val has 4 questions (0_3)")
    );
    Ok(())
}

#[test]
fn sharding_is_deterministic_disjoint_and_complete() -> TestResult {
    let n = NonZeroUsize::new(4).ok_or("zero")?;
    let shards = shard(numbered(100), n);
    assert_eq!(shards.len(), 4);
    assert_eq!(shards, shard(numbered(100), n));

    let mut seen = HashSet::new();
    for (i, s) in shards.iter().enumerate() {
        for q in s {
            assert!(seen.insert(q.id.clone()), "{} in two shards", q.id);
            assert_eq!(shard_of(&q.id, n), i);
        }
    }
    assert_eq!(seen.len(), 100);
    // Every shard gets some of 100 ids: the hash spreads them.
    assert!(shards.iter().all(|s| !s.is_empty()));
    Ok(())
}

#[test]
fn check_reports_counts_for_every_split() -> TestResult {
    let report = check(DataSource::Scienceqa, &fixtures().join("scienceqa"), None)?;
    let names: Vec<&str> = report.splits.iter().map(|s| s.split.as_str()).collect();
    assert_eq!(names, ["train", "test", "minitest"]);
    let test = &report.splits[1];
    assert_eq!(
        (test.total, test.loaded, test.with_image, test.without_image),
        (5, 5, 3, 2)
    );
    assert!(report.is_clean());

    let report = check(DataSource::Vcr, &fixtures().join("broken/vcr"), None)?;
    assert_eq!(report.splits.len(), 1);
    let val = &report.splits[0];
    assert_eq!((val.total, val.loaded, val.bad.len()), (12, 2, 10));
    let text = report.to_string();
    assert!(text.contains("split val: 12 records, 2 loaded"), "{text}");
    assert!(text.contains("bad val-104: "), "{text}");
    assert!(text.contains("10 bad records skipped"), "{text}");

    let report = check(DataSource::Aokvqa, &fixtures().join("aokvqa"), Some("val"))?;
    assert_eq!(report.splits[0].loaded, 6);
    Ok(())
}

#[test]
fn check_without_any_split_is_an_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let err = check(DataSource::Vcr, dir.path(), None).err();
    assert!(
        matches!(err, Some(DatasetError::NoSplits { .. })),
        "{err:?}"
    );
    Ok(())
}
