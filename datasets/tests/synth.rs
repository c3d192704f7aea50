//! The synthetic benchmark: determinism, balance, well-formed records, and answers
//! re-derived from the scene model independently of the generator.
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use tsst_datasets::aokvqa::{self, AokvqaRecord};
use tsst_datasets::synth::scene::{
    Attribute, Colour, Direction, Filter, Object, Query, Reference, Scene,
};
use tsst_datasets::synth::{
    generate, generate_questions, Answer, Difficulty, Kind, SynthMeta, SynthOptions, SynthQuestion,
    META_FILE, SPLITS,
};

fn opts(out: &Path, n: usize, seed: u64, difficulty: Difficulty) -> SynthOptions {
    SynthOptions {
        out: out.to_path_buf(),
        n,
        seed,
        difficulty,
        ..SynthOptions::default()
    }
}

/// Every file under `root`, relative path -> bytes, in sorted order.
fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel, fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn same_seed_gives_identical_bytes_and_other_seeds_differ() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let summary = generate(&opts(a.path(), 200, 7, Difficulty::Medium)).unwrap();
    generate(&opts(b.path(), 200, 7, Difficulty::Medium)).unwrap();
    generate(&opts(c.path(), 200, 8, Difficulty::Medium)).unwrap();
    let (ta, tb, tc) = (tree(a.path()), tree(b.path()), tree(c.path()));
    // 3 annotation files, the meta file, 200 images.
    assert_eq!(ta.len(), 204);
    assert_eq!(summary.images, 200);
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (path, bytes) in &ta {
        assert!(
            tb[path] == *bytes,
            "{} differs between runs",
            path.display()
        );
    }
    for file in [
        "aokvqa_v1p0_train.json",
        "train2017/000000000000.jpg",
        META_FILE,
    ] {
        let p = Path::new(file);
        assert_ne!(ta[p], tc[p], "{file} is the same for seeds 7 and 8");
    }
}

#[test]
fn written_files_parse_and_load_with_the_aokvqa_loader() {
    let dir = tempfile::tempdir().unwrap();
    let summary = generate(&opts(dir.path(), 60, 3, Difficulty::Hard)).unwrap();
    assert_eq!(
        summary
            .splits
            .iter()
            .map(|s| s.questions)
            .collect::<Vec<_>>(),
        vec![48, 6, 6]
    );
    let shown = summary.to_string();
    assert!(
        shown.contains("train") && shown.contains("count_or"),
        "{shown}"
    );

    for (split, n) in SPLITS.iter().zip([48, 6, 6]) {
        let path = dir.path().join(aokvqa::annotations_file(split));
        let records: Vec<AokvqaRecord> = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(records.len(), n);
        for r in &records {
            assert_eq!(r.split, *split);
            let img = dir.path().join(aokvqa::image_rel_path(split, r.image_id));
            let decoded = image::open(&img).unwrap();
            assert_eq!((decoded.width(), decoded.height()), (336, 336));
        }
        let loaded = aokvqa::load(dir.path(), split).unwrap();
        assert_eq!(loaded.questions.len(), n, "{split}");
        assert!(loaded.bad.is_empty(), "{:?}", loaded.bad);
    }

    let meta: SynthMeta =
        serde_json::from_slice(&fs::read(dir.path().join(META_FILE)).unwrap()).unwrap();
    assert_eq!(meta.questions.len(), 60);
    assert_eq!(meta.options.seed, 3);
    assert_eq!(meta.options.difficulty, Difficulty::Hard);
    let first = &meta.questions["synth-3-000000"];
    assert_eq!(first.split, "train");
    assert!((2..=4).contains(&first.steps));
    assert_eq!(first.num_objects, first.scene.objects.len());
}

fn letters_of(qs: &[SynthQuestion], split: &str) -> [usize; 4] {
    let mut n = [0; 4];
    for q in qs.iter().filter(|q| q.record.split == split) {
        n[q.record.correct_choice_idx] += 1;
    }
    n
}

#[test]
fn answer_letters_are_balanced_in_every_split() {
    for difficulty in [Difficulty::Easy, Difficulty::Medium, Difficulty::Hard] {
        let qs = generate_questions(&SynthOptions {
            n: 1000,
            seed: 11,
            difficulty,
            write_images: false,
            ..SynthOptions::default()
        })
        .unwrap();
        assert_eq!(qs.len(), 1000);
        for split in SPLITS {
            let n = letters_of(&qs, split);
            let total: usize = n.iter().sum();
            for count in n {
                let share = count as f64 / total as f64;
                assert!((share - 0.25).abs() <= 0.05, "{difficulty} {split}: {n:?}");
            }
        }
    }
}

/// Counting, recomputed here from the scene without the generator's evaluator.
fn recount(scene: &Scene, q: &Query) -> Option<usize> {
    let objs = &scene.objects;
    match q {
        Query::Count { filter } => Some(
            objs.iter()
                .filter(|o| match *filter {
                    Filter::Any => true,
                    Filter::Colour(c) => o.colour == c,
                    Filter::Shape(s) => o.shape == s,
                    Filter::Both(c, s) => o.colour == c && o.shape == s,
                    Filter::Either(c, s) => o.colour == c || o.shape == s,
                })
                .count(),
        ),
        Query::CountDirection {
            reference,
            direction,
            filter,
        } => {
            let refs: Vec<&Object> = objs
                .iter()
                .filter(|o| o.colour == reference.colour && o.shape == reference.shape)
                .collect();
            assert_eq!(refs.len(), 1, "reference must be unique");
            let r = refs[0];
            // Pixel geometry, not grid cells: what a viewer of the image sees.
            Some(
                objs.iter()
                    .filter(|o| match direction {
                        Direction::Left => o.x < r.x - r.radius,
                        Direction::Right => o.x > r.x + r.radius,
                        Direction::Above => o.y < r.y - r.radius,
                        Direction::Below => o.y > r.y + r.radius,
                    })
                    .filter(|o| match filter {
                        Filter::Colour(c) => o.colour == *c,
                        _ => true,
                    })
                    .count(),
            )
        }
        _ => None,
    }
}

/// Follows a relation chain by pixel geometry: the same row is a vertical offset
/// under half a cell, and "directly left" is the nearest such object on the left.
fn follow<'s>(scene: &'s Scene, reference: &Reference, path: &[Direction]) -> &'s Object {
    let half = scene.canvas as i32 / scene.grid as i32 / 2;
    let objs = &scene.objects;
    let mut at = objs
        .iter()
        .find(|o| o.colour == reference.colour && o.shape == reference.shape)
        .unwrap();
    for d in path {
        at = objs
            .iter()
            .filter(|o| match d {
                Direction::Left => (o.y - at.y).abs() < half && o.x < at.x,
                Direction::Right => (o.y - at.y).abs() < half && o.x > at.x,
                Direction::Above => (o.x - at.x).abs() < half && o.y < at.y,
                Direction::Below => (o.x - at.x).abs() < half && o.y > at.y,
            })
            .min_by_key(|o| (o.x - at.x).abs() + (o.y - at.y).abs())
            .unwrap();
    }
    at
}

fn colour_count(scene: &Scene, c: Colour) -> usize {
    scene.objects.iter().filter(|o| o.colour == c).count()
}

#[test]
fn answers_match_the_scene_and_records_are_well_formed() {
    let mut kinds_seen = std::collections::BTreeSet::new();
    for difficulty in [Difficulty::Easy, Difficulty::Medium, Difficulty::Hard] {
        let qs = generate_questions(&SynthOptions {
            n: 400,
            seed: 5,
            difficulty,
            write_images: false,
            ..SynthOptions::default()
        })
        .unwrap();
        let mut ids = std::collections::BTreeSet::new();
        let mut images = std::collections::BTreeSet::new();
        for q in &qs {
            let r = &q.record;
            kinds_seen.insert(q.kind);
            assert!(ids.insert(r.question_id.clone()));
            assert!(images.insert(r.image_id));
            assert_eq!(r.choices.len(), 4, "{r:?}");
            let unique: std::collections::BTreeSet<&String> = r.choices.iter().collect();
            assert_eq!(unique.len(), 4, "duplicate choices: {r:?}");
            assert!(r.correct_choice_idx < 4);
            let correct = &r.choices[r.correct_choice_idx];
            assert_eq!(r.direct_answers, vec![correct.clone(); 10]);
            assert!(!r.difficult_direct_answer);
            assert_eq!(r.rationales.len(), 3);
            let letter = (b'A' + r.correct_choice_idx as u8) as char;
            for rat in &r.rationales {
                assert!(rat.ends_with(&format!("Final Answer: ({letter})")), "{rat}");
                assert_eq!(rat.matches("Final Answer").count(), 1, "{rat}");
            }
            // Steps: one sentence each, numbered, as many as the kind promises.
            let body = r.rationales[0].split(" Final Answer:").next().unwrap();
            assert_eq!(q.steps, q.kind.steps(), "{}", r.rationales[0]);
            assert_eq!(body.matches(". Step ").count() + 1, q.steps, "{body}");
            assert_eq!(body.matches('.').count(), q.steps, "{body}");
            assert!(body.starts_with("Step 1: ") && body.ends_with('.'));
            assert!(!body.contains('?') && !body.contains('!'));
            assert!(difficulty.kinds().contains(&q.kind));
            let (lo, hi) = difficulty.objects();
            assert!((lo..=hi).contains(&q.scene.objects.len()));
            q.scene.check().unwrap();

            if let Some(k) = recount(&q.scene, &q.query) {
                assert_eq!(q.answer, Answer::Count(k), "{}", r.question);
                assert_eq!(*correct, k.to_string(), "{}", r.question);
            }
            if let Query::Relate {
                reference,
                path,
                attribute,
            } = &q.query
            {
                let o = follow(&q.scene, reference, path);
                let expect = match attribute {
                    Attribute::Colour => o.colour.name(),
                    Attribute::Shape => o.shape.name(),
                };
                assert_eq!(correct, expect, "{}", r.question);
            }
            if let Query::Compare { first, second } = q.query {
                let (a, b) = (
                    colour_count(&q.scene, first),
                    colour_count(&q.scene, second),
                );
                assert!(a > 0 && b > 0);
                let expect = match a.cmp(&b) {
                    std::cmp::Ordering::Greater => "yes",
                    _ => "no",
                };
                assert!(
                    correct.starts_with(expect),
                    "{} {a} {b} {correct}",
                    r.question
                );
            }
            if let Query::MostColour { .. } = q.query {
                assert!(r.rationales[0].contains(&format!(
                    "{}{} has the most",
                    correct[..1].to_uppercase(),
                    &correct[1..]
                )));
            }
        }
    }
    assert_eq!(kinds_seen.len(), Kind::ALL.len(), "{kinds_seen:?}");
}

#[test]
fn bad_options_are_errors_not_panics() {
    let bad_splits = "0.5,0.1,0.1".parse::<tsst_datasets::synth::SplitFractions>();
    assert!(bad_splits.is_err());
    assert!("impossible".parse::<Difficulty>().is_err());
    assert_eq!("Hard".parse::<Difficulty>().unwrap(), Difficulty::Hard);
    let o = SynthOptions {
        image_size: 10,
        ..SynthOptions::default()
    };
    assert!(generate_questions(&o).is_err());

    // An output path under a regular file cannot be created; the error names it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    fs::write(&file, b"x").unwrap();
    let err = generate(&opts(&file.join("out"), 4, 0, Difficulty::Easy)).unwrap_err();
    assert!(err.to_string().contains("file"), "{err}");
}

#[test]
fn tiny_and_empty_runs_work() {
    for n in [0, 1, 3] {
        let qs = generate_questions(&SynthOptions {
            n,
            write_images: false,
            ..SynthOptions::default()
        })
        .unwrap();
        assert_eq!(qs.len(), n);
    }
}

/// `SYNTH_SAMPLE_DIR=/tmp/synth cargo test -p tsst-datasets --test synth -- --ignored
/// --nocapture`: writes 1000 questions there, prints the summary, the time taken
/// and one question per kind.
#[test]
#[ignore]
fn write_sample() {
    let Some(dir) = std::env::var_os("SYNTH_SAMPLE_DIR") else {
        return;
    };
    let difficulty: Difficulty = std::env::var("SYNTH_DIFFICULTY")
        .unwrap_or_else(|_| "medium".into())
        .parse()
        .unwrap();
    let o = opts(Path::new(&dir), 1000, 0, difficulty);
    let start = std::time::Instant::now();
    let summary = generate(&o).unwrap();
    let took = start.elapsed();
    print!("{summary}");
    println!("took {took:.2?}");
    let start = std::time::Instant::now();
    let qs = generate_questions(&o).unwrap();
    println!("questions alone took {:.2?}", start.elapsed());
    // A 3x3 contact sheet of the first images, as PNG for quick viewing.
    let mut sheet = image::RgbImage::new(3 * 340, 3 * 340);
    for (k, q) in qs.iter().take(9).enumerate() {
        let path = Path::new(&dir).join(aokvqa::image_rel_path(&q.record.split, q.record.image_id));
        let img = image::open(path).unwrap().to_rgb8();
        let (x, y) = ((k % 3) as i64 * 340, (k / 3) as i64 * 340);
        image::imageops::replace(&mut sheet, &img, x, y);
    }
    sheet
        .save(Path::new(&dir).join("contact_sheet.png"))
        .unwrap();
    for kind in Kind::ALL {
        if let Some(q) = qs.iter().find(|q| q.kind == kind) {
            let r = &q.record;
            println!(
                "\n[{}] {} image {}\nQ: {}\nchoices: {:?} correct {}\n{}\n{}\n{}",
                kind.name(),
                r.question_id,
                aokvqa::image_rel_path(&r.split, r.image_id),
                r.question,
                r.choices,
                r.correct_choice_idx,
                r.rationales[0],
                r.rationales[1],
                r.rationales[2]
            );
        }
    }
}
