//! The next round's training data (TSST.md, "Datasets for the next round"): D+ for the
//! policy, Dv for the value model and the warm-up value chains, as LLaVA training JSON.
//!
//! A record is
//! `{"id", "image"?, "conversations": [{"from": "human", "value": "<image>\n" + prompt},
//! {"from": "gpt", "value": text}], "value"?}`; text-only questions have no `image`
//! and no `<image>\n`, policy records no `value`. Ids are deterministic:
//! `{source}/{question}/plus/{i}` (i-th kept solution), `{source}/{question}/value/{path}`
//! (tree path, see [`LabelledNode::path`]) and `{source}/{question}/warmup/{k}`.
use crate::extract::has_final_answer;
use crate::prompt::{human_turn, task_prompt};
use crate::value_tree::{assign_value_tree, LabelledNode, TreePath};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Component, Path, PathBuf};
use thiserror::Error;
use tsst_messages::results::Solution;
use tsst_messages::Question;

/// How the datasets are built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetOptions {
    /// Verified-correct solutions kept per question for D+ (the reference kept 1).
    pub k: usize,
    /// `image` is written relative to this directory; an image outside it is an error.
    /// `None` writes the paths as the results file has them.
    pub image_root: Option<PathBuf>,
    /// Keep only D+ solutions that state a final answer (as the tree does). A solution
    /// whose fallback "last sentence" happened to be right would teach the policy to
    /// stop without the answer format, so this is on by default.
    pub policy_requires_final_answer: bool,
}

impl Default for DatasetOptions {
    fn default() -> Self {
        DatasetOptions {
            k: 1,
            image_root: None,
            policy_requires_final_answer: true,
        }
    }
}

/// One turn of a LLaVA conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// `human` or `gpt`.
    pub from: String,
    pub value: String,
}

/// One LLaVA training record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlavaRecord {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub conversations: Vec<Turn>,
    /// The value label (Dv and warm-up records only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

#[derive(Debug, Error)]
pub enum DatasetError {
    #[error("question {question}: image {image} is not under the image root {root}")]
    ImageOutsideRoot {
        question: String,
        image: PathBuf,
        root: PathBuf,
    },
    #[error("question {question}: image path {image} is not valid UTF-8")]
    ImageNotUtf8 { question: String, image: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// The file layout of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// One JSON array (what LLaVA's trainer loads).
    #[default]
    JsonArray,
    /// One record per line.
    Jsonl,
}

/// The text of a solution: its steps joined by single spaces, which is how the search
/// writes `Solution::text` and how tree nodes are written, so D+ and Dv agree; the
/// stored text only when there are no steps.
fn solution_text(solution: &Solution) -> String {
    if solution.steps.is_empty() {
        solution.text.clone()
    } else {
        solution.steps.join(" ")
    }
}

/// The solutions that enter the tree: verified, and stating a final answer. The order
/// is kept (best value first), which fixes the node paths.
pub fn tree_paths(solutions: &[Solution]) -> Vec<TreePath<'_>> {
    solutions
        .iter()
        .filter(|s| has_final_answer(&solution_text(s)))
        .filter_map(|s| {
            s.verdict.as_ref().map(|v| TreePath {
                steps: &s.steps,
                correct: v.correct,
            })
        })
        .collect()
}

/// D+ records: the first `k` verified-correct solutions in the order given (the results
/// file lists them best value first).
pub fn policy_records(
    question: &Question,
    solutions: &[Solution],
    options: &DatasetOptions,
) -> Result<Vec<LlavaRecord>, DatasetError> {
    let kept: Vec<String> = solutions
        .iter()
        .filter(|s| s.verdict.as_ref().is_some_and(|v| v.correct))
        .map(solution_text)
        .filter(|t| !options.policy_requires_final_answer || has_final_answer(t))
        .take(options.k)
        .collect();
    if kept.is_empty() {
        return Ok(Vec::new());
    }
    let base = RecordBase::new(question, options)?;
    Ok(kept
        .into_iter()
        .enumerate()
        .map(|(i, text)| base.record(format!("plus/{i}"), text, None))
        .collect())
}

/// Dv records: every labelled node of the question's tree (none when no solution is
/// correct).
pub fn value_records(
    question: &Question,
    solutions: &[Solution],
    options: &DatasetOptions,
) -> Result<Vec<LlavaRecord>, DatasetError> {
    let nodes = assign_value_tree(&tree_paths(solutions));
    value_records_from_nodes(question, &nodes, options)
}

/// Dv records for nodes already labelled.
pub fn value_records_from_nodes(
    question: &Question,
    nodes: &[LabelledNode],
    options: &DatasetOptions,
) -> Result<Vec<LlavaRecord>, DatasetError> {
    if nodes.is_empty() {
        return Ok(Vec::new());
    }
    let base = RecordBase::new(question, options)?;
    Ok(nodes
        .iter()
        .map(|n| {
            base.record(
                format!("value/{}", n.path_string()),
                n.text.clone(),
                Some(n.value),
            )
        })
        .collect())
}

/// Warm-up values of a correct chain of `n` steps: step k (1-based) gets k/n, so the
/// last step, which states the final answer, gets 1.0.
pub fn warmup_values(n: usize) -> Vec<f64> {
    (1..=n).map(|k| k as f64 / n as f64).collect()
}

/// Warm-up Dv records for a correct chain (TSST.md, "Warm-up value data"): one per
/// prefix, its text the first k steps joined by single spaces, its value k/n.
pub fn warmup_value_records(
    question: &Question,
    steps: &[String],
    options: &DatasetOptions,
) -> Result<Vec<LlavaRecord>, DatasetError> {
    if steps.is_empty() {
        return Ok(Vec::new());
    }
    let base = RecordBase::new(question, options)?;
    Ok(warmup_values(steps.len())
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            base.record(
                format!("warmup/{}", i + 1),
                steps[..=i].join(" "),
                Some(value),
            )
        })
        .collect())
}

/// What every record of one question shares.
struct RecordBase {
    id_prefix: String,
    image: Option<String>,
    human: String,
}

impl RecordBase {
    fn new(question: &Question, options: &DatasetOptions) -> Result<RecordBase, DatasetError> {
        let image = image_field(question, options.image_root.as_deref())?;
        Ok(RecordBase {
            id_prefix: format!("{}/{}", question.source, question.id),
            human: human_turn(&task_prompt(question), image.is_some()),
            image,
        })
    }

    fn record(&self, suffix: String, text: String, value: Option<f64>) -> LlavaRecord {
        LlavaRecord {
            id: format!("{}/{suffix}", self.id_prefix),
            image: self.image.clone(),
            conversations: vec![
                Turn {
                    from: "human".to_string(),
                    value: self.human.clone(),
                },
                Turn {
                    from: "gpt".to_string(),
                    value: text,
                },
            ],
            value,
        }
    }
}

/// The record's `image`: relative to `root` when one is given. Paths are compared
/// after lexical clean-up ("." dropped, ".." folded) and never looked up on disk, so
/// labelling works on a machine without the images.
fn image_field(question: &Question, root: Option<&Path>) -> Result<Option<String>, DatasetError> {
    let Some(image) = question.image.as_deref() else {
        return Ok(None);
    };
    let relative = match root {
        None => image.to_path_buf(),
        Some(root) => {
            let clean_image = lexical_clean(image);
            let clean_root = lexical_clean(root);
            match clean_image.strip_prefix(&clean_root) {
                Ok(rel) if !rel.as_os_str().is_empty() => rel.to_path_buf(),
                _ => {
                    return Err(DatasetError::ImageOutsideRoot {
                        question: question.id.clone(),
                        image: image.to_path_buf(),
                        root: root.to_path_buf(),
                    })
                }
            }
        }
    };
    relative
        .to_str()
        .map(|s| Some(s.to_string()))
        .ok_or_else(|| DatasetError::ImageNotUtf8 {
            question: question.id.clone(),
            image: image.to_path_buf(),
        })
}

fn lexical_clean(path: &Path) -> PathBuf {
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                // ".." above the root is the root; above a relative start it stays.
                Some(Component::RootDir) | Some(Component::Prefix(_)) => {}
                _ => out.push(c),
            },
            _ => out.push(c),
        }
    }
    out.iter().collect()
}

/// Writes `records` to `path` in `format`, through a temporary file beside it that is
/// renamed into place, so a failed write never leaves a truncated dataset behind.
pub fn write_records(
    path: &Path,
    records: &[LlavaRecord],
    format: OutputFormat,
) -> Result<(), DatasetError> {
    let wrap = |source: io::Error| DatasetError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let result = write_to(&tmp, records, format).and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        // Best effort: the write error is the one worth reporting.
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(wrap)
}

fn write_to(path: &Path, records: &[LlavaRecord], format: OutputFormat) -> io::Result<()> {
    let mut out = BufWriter::new(fs::File::create(path)?);
    match format {
        OutputFormat::JsonArray => {
            // One record per line inside the array: still one JSON document, but
            // diffable and greppable.
            out.write_all(b"[")?;
            for (i, record) in records.iter().enumerate() {
                out.write_all(if i == 0 { b"\n" } else { b",\n" })?;
                serde_json::to_writer(&mut out, record)?;
            }
            out.write_all(b"\n]\n")?;
        }
        OutputFormat::Jsonl => {
            for record in records {
                serde_json::to_writer(&mut out, record)?;
                out.write_all(b"\n")?;
            }
        }
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsst_messages::{DataSource, FinishReason, NodeId, Verdict, VerdictSource};

    fn question(image: Option<&str>) -> Question {
        Question {
            id: "q7".to_string(),
            source: DataSource::Aokvqa,
            image: image.map(PathBuf::from),
            question: "What swims?".to_string(),
            choices: vec!["dog".to_string(), "whale".to_string()],
            answer: 1,
            rationales: vec![],
            context: None,
        }
    }

    fn solution(steps: &[&str], correct: Option<bool>) -> Solution {
        let steps: Vec<String> = steps.iter().map(|s| s.to_string()).collect();
        Solution {
            node: NodeId(1),
            text: steps.join(" "),
            values: vec![None; steps.len()],
            steps,
            value: None,
            mean_logprob: -0.5,
            finish: FinishReason::Answer,
            verdict: correct.map(|c| Verdict {
                correct: c,
                extracted: String::new(),
                letter: None,
                by: VerdictSource::Rule,
                note: None,
                grounded: None,
            }),
        }
    }

    fn sols() -> Vec<Solution> {
        vec![
            solution(&["It breathes air.", "Final Answer: B."], Some(true)),
            solution(&["It barks.", "Final Answer: A."], Some(false)),
            solution(&["It is big.", "Final Answer: B."], Some(true)),
            solution(&["It swims."], Some(true)), // no final answer
            solution(&["Hm.", "Final Answer: B."], None), // never verified
        ]
    }

    #[test]
    fn policy_keeps_best_k_correct() {
        let q = question(Some("/data/coco/val2017/1.jpg"));
        let opts = DatasetOptions {
            image_root: Some(PathBuf::from("/data/coco/")),
            ..DatasetOptions::default()
        };
        let r = policy_records(&q, &sols(), &opts).unwrap_or_default();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].id, "aokvqa/q7/plus/0");
        assert_eq!(r[0].image.as_deref(), Some("val2017/1.jpg"));
        assert_eq!(r[0].conversations[0].from, "human");
        assert!(r[0].conversations[0]
            .value
            .starts_with("<image>\nAnswer the following"));
        assert_eq!(r[0].conversations[1].from, "gpt");
        assert_eq!(
            r[0].conversations[1].value,
            "It breathes air. Final Answer: B."
        );
        assert_eq!(r[0].value, None);

        let opts3 = DatasetOptions {
            k: 3,
            ..opts.clone()
        };
        let r = policy_records(&q, &sols(), &opts3).unwrap_or_default();
        let ids: Vec<&str> = r.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["aokvqa/q7/plus/0", "aokvqa/q7/plus/1"]);
        let loose = DatasetOptions {
            policy_requires_final_answer: false,
            ..opts3
        };
        assert_eq!(
            policy_records(&q, &sols(), &loose).map(|r| r.len()).ok(),
            Some(3)
        );
    }

    #[test]
    fn value_records_follow_the_tree() {
        // Verified solutions with a final answer: three, all diverging at the root:
        // x (correct, 2 steps), y (wrong, 2 steps), z (correct, 2 steps): 6 nodes.
        let q = question(None);
        let r = value_records(&q, &sols(), &DatasetOptions::default()).unwrap_or_default();
        assert_eq!(r.len(), 6);
        assert_eq!(r[0].id, "aokvqa/q7/value/0");
        assert_eq!(r[0].image, None);
        assert!(r[0].conversations[0]
            .value
            .starts_with("Answer the following"));
        // First step of a correct 2-step chain: m = 1, v = 1/2.
        assert_eq!(r[0].value, Some(0.5));
        let json = serde_json::to_value(&r[0]).unwrap_or_default();
        assert!(json.get("image").is_none());
        assert_eq!(json["value"], 0.5);
    }

    #[test]
    fn no_correct_solution_gives_no_records() {
        let q = question(None);
        let s = vec![solution(&["Final Answer: A."], Some(false))];
        let opts = DatasetOptions::default();
        assert_eq!(value_records(&q, &s, &opts).map(|r| r.len()).ok(), Some(0));
        assert_eq!(policy_records(&q, &s, &opts).map(|r| r.len()).ok(), Some(0));
    }

    #[test]
    fn image_outside_root_is_an_error() {
        let q = question(Some("/elsewhere/1.jpg"));
        let opts = DatasetOptions {
            image_root: Some(PathBuf::from("/data")),
            ..DatasetOptions::default()
        };
        let err = policy_records(&q, &sols(), &opts);
        assert!(matches!(err, Err(DatasetError::ImageOutsideRoot { .. })));
        // ".." cannot smuggle a path out.
        let q = question(Some("/data/../elsewhere/1.jpg"));
        assert!(policy_records(&q, &sols(), &opts).is_err());
        let q = question(Some("./data/./a/1.jpg"));
        let rel = DatasetOptions {
            image_root: Some(PathBuf::from("data")),
            ..DatasetOptions::default()
        };
        let r = policy_records(&q, &sols(), &rel).unwrap_or_default();
        assert_eq!(r[0].image.as_deref(), Some("a/1.jpg"));
    }

    #[test]
    fn warmup_is_linear() {
        assert_eq!(warmup_values(4), [0.25, 0.5, 0.75, 1.0]);
        assert!(warmup_values(0).is_empty());
        let q = question(Some("1.jpg"));
        let steps: Vec<String> = ["A.", "B.", "Final Answer: B."]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let r = warmup_value_records(&q, &steps, &DatasetOptions::default()).unwrap_or_default();
        assert_eq!(r.len(), 3);
        assert_eq!(r[1].id, "aokvqa/q7/warmup/2");
        assert_eq!(r[1].conversations[1].value, "A. B.");
        assert_eq!(r[2].value, Some(1.0));
        assert_eq!(r[0].image.as_deref(), Some("1.jpg"));
    }

    #[test]
    fn writers_round_trip() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let q = question(Some("1.jpg"));
        let records = value_records(&q, &sols(), &DatasetOptions::default())?;
        let array = dir.path().join("dv.json");
        write_records(&array, &records, OutputFormat::JsonArray)?;
        let back: Vec<LlavaRecord> = serde_json::from_str(&fs::read_to_string(&array)?)?;
        assert_eq!(back, records);
        let lines = dir.path().join("dv.jsonl");
        write_records(&lines, &records, OutputFormat::Jsonl)?;
        let text = fs::read_to_string(&lines)?;
        let back: Vec<LlavaRecord> = text
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        assert_eq!(back, records);
        let empty = dir.path().join("empty.json");
        write_records(&empty, &[], OutputFormat::JsonArray)?;
        let back: Vec<LlavaRecord> = serde_json::from_str(&fs::read_to_string(&empty)?)?;
        assert!(back.is_empty());
        assert!(!dir.path().join("dv.json.tmp").exists());
        let bad = write_records(
            &dir.path().join("no/such/dir.json"),
            &[],
            OutputFormat::Jsonl,
        );
        assert!(matches!(bad, Err(DatasetError::Write { .. })));
        Ok(())
    }
}
