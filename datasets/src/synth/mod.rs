//! The synthetic visual-reasoning benchmark: rendered scenes of coloured shapes with
//! multiple-choice questions that need 2 to 4 grounded reasoning steps, written in the
//! A-OKVQA published format so every A-OKVQA code path (loading, prompting,
//! verification, the TSST loop) runs on it unchanged.
//!
//! Output under [`SynthOptions::out`]:
//! - `aokvqa_v1p0_{train,val,test}.json`: lists of [`AokvqaRecord`]; `rationales[0]`
//!   is a `Step k: ...` chain ending in `Final Answer: (X)`, `rationales[1..3]` are
//!   shorter paraphrases ending the same way.
//! - `{split}2017/{image_id:012}.jpg`: one image per question.
//! - `synth_meta.json`: a [`SynthMeta`]: the options, the format version, and per
//!   question (keyed by `question_id`) its kind, difficulty, step count, query
//!   program and full scene, so results can be sliced and re-checked.
//!
//! Every byte is a function of the options: same options, same files (JSON and JPEG).
//!
//! Difficulty levels (see [`Difficulty`]):
//!
//! | level  | objects | lattice | question kinds (steps) |
//! |--------|---------|---------|------------------------|
//! | easy   | 3-5     | 3x3     | count_attribute, relate, extreme_size, most_colour (2) |
//! | medium | 5-8     | 4x4     | relate, extreme_size (2); count_and, count_direction, most_colour_of_shape, compare_colours (3) |
//! | hard   | 8-12    | 5x5     | count_and, relate_two_hop, count_direction, most_colour_of_shape, compare_colours (3); count_or, count_direction_filtered (4) |
//!
//! Shapes scale with the lattice cell, so hard scenes also have smaller shapes.
//!
//! Spatial words have one meaning each, fixed by the lattice (objects sit in
//! distinct cells with a few pixels of jitter): "directly to the left of X" is the
//! nearest object in X's row on its left; "to the left of X" is every object in a
//! column left of X's, and the generator keeps X's own column empty for those
//! questions so no object is borderline. Referenced objects ("the blue square") are
//! unique by colour and shape; "largest" and "most" questions never tie. Each
//! question is planted (its answer drawn from a spread-out range, with near-miss
//! objects that a one-filter shortcut would count) and then answered by
//! [`scene::evaluate`] from the finished scene, which is the source of truth.
//! Within each split the correct letter and the question kind are each assigned
//! from a shuffled balanced cycle, so both are balanced to within one question.
mod draw;
mod prng;
mod questions;
mod rationale;
pub mod scene;
mod write;

pub use questions::Kind;
pub use scene::{Answer, Query, Scene};

use crate::aokvqa::AokvqaRecord;
use prng::Prng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Bumped whenever the same options would produce different files.
pub const SYNTH_VERSION: u32 = 1;

/// The `format` field of `synth_meta.json`.
pub const SYNTH_FORMAT: &str = "tsst-synth";

/// The `synth_meta.json` file name.
pub const META_FILE: &str = "synth_meta.json";

/// Split names in output order.
pub const SPLITS: [&str; 3] = ["train", "val", "test"];

/// How hard the scenes and questions are (see the module table).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Difficulty {
    Easy,
    #[default]
    Medium,
    Hard,
}

impl Difficulty {
    pub fn name(self) -> &'static str {
        match self {
            Difficulty::Easy => "easy",
            Difficulty::Medium => "medium",
            Difficulty::Hard => "hard",
        }
    }

    /// Inclusive range of objects per scene.
    pub fn objects(self) -> (usize, usize) {
        match self {
            Difficulty::Easy => (3, 5),
            Difficulty::Medium => (5, 8),
            Difficulty::Hard => (8, 12),
        }
    }

    /// Cells per side of the placement lattice.
    pub fn grid(self) -> u32 {
        match self {
            Difficulty::Easy => 3,
            Difficulty::Medium => 4,
            Difficulty::Hard => 5,
        }
    }

    /// The question kinds drawn at this level, in equal shares.
    pub fn kinds(self) -> &'static [Kind] {
        match self {
            Difficulty::Easy => &[
                Kind::CountAttribute,
                Kind::Relate,
                Kind::ExtremeSize,
                Kind::MostColour,
            ],
            Difficulty::Medium => &[
                Kind::Relate,
                Kind::ExtremeSize,
                Kind::CountAnd,
                Kind::CountDirection,
                Kind::MostColourOfShape,
                Kind::CompareColours,
            ],
            Difficulty::Hard => &[
                Kind::CountAnd,
                Kind::RelateTwoHop,
                Kind::CountDirection,
                Kind::MostColourOfShape,
                Kind::CompareColours,
                Kind::CountOr,
                Kind::CountDirectionFiltered,
            ],
        }
    }
}

impl fmt::Display for Difficulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Difficulty {
    type Err = SynthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "easy" => Ok(Difficulty::Easy),
            "medium" => Ok(Difficulty::Medium),
            "hard" => Ok(Difficulty::Hard),
            other => Err(SynthError::Options(format!(
                "unknown difficulty `{other}` (expected easy, medium or hard)"
            ))),
        }
    }
}

/// Train/val/test fractions of the `n` questions; they must sum to 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SplitFractions {
    pub train: f64,
    pub val: f64,
    pub test: f64,
}

impl Default for SplitFractions {
    fn default() -> Self {
        SplitFractions {
            train: 0.8,
            val: 0.1,
            test: 0.1,
        }
    }
}

impl SplitFractions {
    fn validate(&self) -> Result<(), SynthError> {
        let all = [self.train, self.val, self.test];
        if all.iter().any(|f| !f.is_finite() || *f < 0.0) {
            return Err(SynthError::Options(format!(
                "split fractions must be non-negative numbers, got {self}"
            )));
        }
        if (all.iter().sum::<f64>() - 1.0).abs() > 1e-6 {
            return Err(SynthError::Options(format!(
                "split fractions must sum to 1, got {self}"
            )));
        }
        Ok(())
    }

    /// Questions per split: train and val rounded to nearest, test takes the rest,
    /// so the three always add up to `n`.
    pub fn counts(&self, n: usize) -> [usize; 3] {
        let round = |f: f64| ((n as f64) * f).round().max(0.0) as usize;
        let train = round(self.train).min(n);
        let val = round(self.val).min(n - train);
        [train, val, n - train - val]
    }
}

impl fmt::Display for SplitFractions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{},{}", self.train, self.val, self.test)
    }
}

/// Parses `0.8,0.1,0.1` (the `--splits` flag).
impl FromStr for SplitFractions {
    type Err = SynthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        let bad = || {
            SynthError::Options(format!(
                "splits `{s}`: expected three fractions like 0.8,0.1,0.1"
            ))
        };
        let [train, val, test] = parts.as_slice() else {
            return Err(bad());
        };
        let num = |x: &str| x.parse::<f64>().map_err(|_| bad());
        let fr = SplitFractions {
            train: num(train)?,
            val: num(val)?,
            test: num(test)?,
        };
        fr.validate()?;
        Ok(fr)
    }
}

/// What to generate. `Default` gives 1000 medium questions, seed 0, 0.8/0.1/0.1,
/// 336x336 images (LLaVA-1.5's input size) at JPEG quality 90, into `data/synth`.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthOptions {
    /// Output directory; created if missing. Files from an earlier run with a
    /// larger `n` are not removed.
    pub out: PathBuf,
    /// Total questions over all splits (one image each).
    pub n: usize,
    /// Everything random derives from this.
    pub seed: u64,
    pub difficulty: Difficulty,
    pub splits: SplitFractions,
    /// Side of the square images in pixels (64..=2048).
    pub image_size: u32,
    /// JPEG quality (1..=100). High by default so colours stay clean.
    pub jpeg_quality: u8,
    /// When false, only the JSON files are written (no images): for tests and quick
    /// looks at the questions. The loaders reject records without images.
    pub write_images: bool,
    /// Threads that render and encode images; 0 = one per core (at most 8). Has no
    /// effect on the output.
    pub threads: usize,
}

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions {
            out: PathBuf::from("data/synth"),
            n: 1000,
            seed: 0,
            difficulty: Difficulty::Medium,
            splits: SplitFractions::default(),
            image_size: 336,
            jpeg_quality: 90,
            write_images: true,
            threads: 0,
        }
    }
}

impl SynthOptions {
    fn validate(&self) -> Result<(), SynthError> {
        self.splits.validate()?;
        if !(64..=2048).contains(&self.image_size) {
            return Err(SynthError::Options(format!(
                "image size {} outside 64..=2048",
                self.image_size
            )));
        }
        if !(1..=100).contains(&self.jpeg_quality) {
            return Err(SynthError::Options(format!(
                "JPEG quality {} outside 1..=100",
                self.jpeg_quality
            )));
        }
        if self.n > 1_000_000 {
            return Err(SynthError::Options(format!(
                "n = {} is more than the 1000000 question ids have room for",
                self.n
            )));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("invalid synthetic benchmark options: {0}")]
    Options(String),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serialise {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode {path}: {source}")]
    Image {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error("an image-writing thread panicked")]
    WorkerPanicked,
    /// A generator defect: planting never produced an answerable scene.
    #[error("question {question_id}: no answerable {kind} scene after {attempts} attempts")]
    Unplannable {
        question_id: String,
        kind: &'static str,
        attempts: usize,
    },
}

/// One generated question with everything needed to re-check it.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthQuestion {
    /// Global 0-based index over train, val, test in that order.
    pub index: usize,
    pub record: AokvqaRecord,
    pub kind: Kind,
    pub difficulty: Difficulty,
    /// Number of `Step k:` sentences in `record.rationales[0]`.
    pub steps: usize,
    pub scene: Scene,
    pub query: Query,
    pub answer: Answer,
}

/// `synth_meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthMeta {
    pub format: String,
    pub version: u32,
    pub options: MetaOptions,
    /// Questions per split.
    pub split_counts: BTreeMap<String, usize>,
    /// Keyed by `question_id` (which sorts in index order).
    pub questions: BTreeMap<String, QuestionMeta>,
}

/// The generation options as recorded (the output path is left out so the file
/// does not depend on where it was written).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetaOptions {
    pub n: usize,
    pub seed: u64,
    pub difficulty: Difficulty,
    pub splits: SplitFractions,
    pub image_size: u32,
    pub jpeg_quality: u8,
    pub images: bool,
    pub grid: u32,
    pub objects_min: usize,
    pub objects_max: usize,
    pub kinds: Vec<Kind>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuestionMeta {
    pub split: String,
    pub index: usize,
    pub image_id: u64,
    pub kind: Kind,
    pub difficulty: Difficulty,
    pub steps: usize,
    pub answer: String,
    pub correct_choice_idx: usize,
    pub num_objects: usize,
    pub query: Query,
    pub scene: Scene,
}

/// Per-split counts for [`SynthSummary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitSummary {
    pub split: &'static str,
    pub questions: usize,
    /// How often the correct answer is A, B, C, D.
    pub letters: [usize; 4],
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthSummary {
    pub out: PathBuf,
    pub seed: u64,
    pub difficulty: Difficulty,
    pub questions: usize,
    pub images: usize,
    pub splits: Vec<SplitSummary>,
    /// (kind, steps, questions) in [`Kind::ALL`] order, kinds that occur only.
    pub kinds: Vec<(Kind, usize, usize)>,
}

impl SynthSummary {
    fn of(opts: &SynthOptions, qs: &[SynthQuestion], images: usize) -> Self {
        let splits = SPLITS
            .iter()
            .map(|&split| {
                let mut letters = [0; 4];
                let mut questions = 0;
                for q in qs.iter().filter(|q| q.record.split == split) {
                    questions += 1;
                    if let Some(slot) = letters.get_mut(q.record.correct_choice_idx) {
                        *slot += 1;
                    }
                }
                SplitSummary {
                    split,
                    questions,
                    letters,
                }
            })
            .collect();
        let kinds = Kind::ALL
            .iter()
            .map(|&k| (k, k.steps(), qs.iter().filter(|q| q.kind == k).count()))
            .filter(|&(_, _, n)| n > 0)
            .collect();
        SynthSummary {
            out: opts.out.clone(),
            seed: opts.seed,
            difficulty: opts.difficulty,
            questions: qs.len(),
            images,
            splits,
            kinds,
        }
    }
}

impl fmt::Display for SynthSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "synthetic benchmark: {} questions, {} images, difficulty {}, seed {} -> {}",
            self.questions,
            self.images,
            self.difficulty,
            self.seed,
            self.out.display()
        )?;
        writeln!(
            f,
            "{:<8}{:>10}{:>7}{:>7}{:>7}{:>7}",
            "split", "questions", "A", "B", "C", "D"
        )?;
        for s in &self.splits {
            write!(f, "{:<8}{:>10}", s.split, s.questions)?;
            for n in s.letters {
                write!(f, "{n:>7}")?;
            }
            writeln!(f)?;
        }
        writeln!(f, "{:<26}{:>6}{:>11}", "kind", "steps", "questions")?;
        for (k, steps, n) in &self.kinds {
            writeln!(f, "{:<26}{steps:>6}{n:>11}", k.name())?;
        }
        Ok(())
    }
}

/// Stream keys for [`Prng::derive`].
const STREAM_ASSIGN: u64 = 1;
const STREAM_QUESTION: u64 = 2;

/// Enough for every kind at every level: planting fails well under 10% of the
/// time, so 200 straight failures would mean a generator bug.
const MAX_ATTEMPTS: usize = 200;

/// `0..k` repeated over `m` slots from a random starting point, then shuffled:
/// each value occurs `m / k` or `m / k + 1` times.
fn balanced(m: usize, k: usize, rng: &mut Prng) -> Vec<usize> {
    let k = k.max(1);
    let start = rng.below(k);
    let mut v: Vec<usize> = (0..m).map(|i| (i + start) % k).collect();
    rng.shuffle(&mut v);
    v
}

/// Generates the questions (scenes, records, metadata) without writing anything.
pub fn generate_questions(opts: &SynthOptions) -> Result<Vec<SynthQuestion>, SynthError> {
    opts.validate()?;
    let counts = opts.splits.counts(opts.n);
    let kinds = opts.difficulty.kinds();
    let mut out = Vec::with_capacity(opts.n);
    let mut index = 0usize;
    for (si, (&split, &m)) in SPLITS.iter().zip(counts.iter()).enumerate() {
        let mut assign = Prng::derive(opts.seed, STREAM_ASSIGN, si as u64);
        let letters = balanced(m, 4, &mut assign);
        let kind_slots = balanced(m, kinds.len(), &mut assign);
        for (&letter, &slot) in letters.iter().zip(kind_slots.iter()) {
            let kind = kinds[slot % kinds.len()];
            out.push(one(opts, split, index, kind, letter)?);
            index += 1;
        }
    }
    Ok(out)
}

fn one(
    opts: &SynthOptions,
    split: &str,
    index: usize,
    kind: Kind,
    letter: usize,
) -> Result<SynthQuestion, SynthError> {
    let question_id = format!("synth-{}-{index:06}", opts.seed);
    let mut rng = Prng::derive(opts.seed, STREAM_QUESTION, index as u64);
    let planned = (0..MAX_ATTEMPTS)
        .find_map(|_| questions::plan(kind, opts.difficulty, opts.image_size, &mut rng));
    let Some((scene, query, answer)) = planned else {
        return Err(SynthError::Unplannable {
            question_id,
            kind: kind.name(),
            attempts: MAX_ATTEMPTS,
        });
    };
    let choices = questions::choices(&scene, &query, &answer, letter, &mut rng);
    let explanation = rationale::explain(&scene, &query, &answer);
    let correct = questions::answer_text(&query, &answer);
    // `choices` puts the answer at `letter`; read it back rather than trust that.
    let letter = choices.iter().position(|c| *c == correct).unwrap_or(letter);
    let record = AokvqaRecord {
        split: split.to_string(),
        image_id: index as u64,
        question_id,
        question: questions::question_text(&query),
        choices,
        correct_choice_idx: letter,
        direct_answers: vec![correct; 10],
        difficult_direct_answer: false,
        rationales: explanation.rationales(letter),
    };
    Ok(SynthQuestion {
        index,
        record,
        kind,
        difficulty: opts.difficulty,
        steps: explanation.steps.len(),
        scene,
        query,
        answer,
    })
}

/// Generates the benchmark and writes it under `opts.out` (see the module docs).
pub fn generate(opts: &SynthOptions) -> Result<SynthSummary, SynthError> {
    let qs = generate_questions(opts)?;
    let images = write::write_all(opts, &qs)?;
    Ok(SynthSummary::of(opts, &qs, images))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_counts_add_up() {
        let f = SplitFractions::default();
        assert_eq!(f.counts(1000), [800, 100, 100]);
        assert_eq!(f.counts(7), [6, 1, 0]);
        assert_eq!(f.counts(0), [0, 0, 0]);
        let odd: SplitFractions = "0.34, 0.33, 0.33".parse().unwrap();
        assert_eq!(odd.counts(10).iter().sum::<usize>(), 10);
        assert!("1,0".parse::<SplitFractions>().is_err());
        assert!("a,b,c".parse::<SplitFractions>().is_err());
        assert!("-0.2,0.6,0.6".parse::<SplitFractions>().is_err());
    }

    #[test]
    fn balanced_cycles_differ_by_at_most_one() {
        let mut rng = Prng::derive(0, 0, 0);
        for m in [0, 1, 5, 10, 101] {
            let v = balanced(m, 4, &mut rng);
            assert_eq!(v.len(), m);
            let counts: Vec<usize> = (0..4)
                .map(|k| v.iter().filter(|&&x| x == k).count())
                .collect();
            let spread = counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0);
            assert!(spread <= 1, "{m}: {counts:?}");
        }
    }

    #[test]
    fn difficulty_round_trips_through_text() {
        for d in [Difficulty::Easy, Difficulty::Medium, Difficulty::Hard] {
            assert_eq!(d.to_string().parse::<Difficulty>().unwrap(), d);
            let (lo, hi) = d.objects();
            assert!(lo <= hi && hi < (d.grid() * d.grid()) as usize);
        }
    }
}
