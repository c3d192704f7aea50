//! `tsst label --input RESULTS.jsonl --value-out DV.json --policy-out DPLUS.json
//! [--k N] [--image-root DIR] [--jsonl]`: label a results file offline and write the
//! next round's datasets.
//!
//! Which questions are labelled: `done` ones. `failed` questions have no trustworthy
//! solutions and `pending` ones may be only partly verified (a tree built from some of
//! their verdicts would mislabel nodes), so both are skipped and counted. A question
//! that appears again (same source and id) is reported as a bad line and skipped:
//! its records would reuse the first one's ids.
//!
//! Limitation: the results format carries no `context`, so ScienceQA hints are missing
//! from the prompts built here (the online labeler, which has the `Question`, has them).
use crate::datasets::{
    policy_records, value_records, write_records, DatasetError, DatasetOptions, OutputFormat,
};
use crate::metrics::RunMetrics;
use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use thiserror::Error;
use tsst_messages::results::{QuestionResult, QuestionStatus};
use tsst_messages::{DataSource, Question};

/// The command's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineArgs {
    pub input: PathBuf,
    pub value_out: PathBuf,
    pub policy_out: PathBuf,
    /// D+ solutions per question.
    pub k: usize,
    pub image_root: Option<PathBuf>,
    /// Write JSONL instead of a JSON array.
    pub jsonl: bool,
}

impl OfflineArgs {
    /// Defaults for everything but the three files (`k` 1, no image root, JSON array).
    pub fn new(input: PathBuf, value_out: PathBuf, policy_out: PathBuf) -> OfflineArgs {
        OfflineArgs {
            input,
            value_out,
            policy_out,
            k: DatasetOptions::default().k,
            image_root: None,
            jsonl: false,
        }
    }
}

#[derive(Debug, Error)]
pub enum OfflineError {
    #[error("cannot read results file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("results file {path}, line {line}: {source}")]
    Question {
        path: PathBuf,
        line: usize,
        source: DatasetError,
    },
    #[error("cannot write the {what} dataset: {source}")]
    Write {
        what: &'static str,
        source: DatasetError,
    },
    #[error("the value and policy outputs are the same file {0}")]
    SameOutput(PathBuf),
}

/// A line of the results file that was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based.
    pub line: usize,
    pub message: String,
}

/// Records written for one data source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceCounts {
    pub source: DataSource,
    /// Questions labelled (status `done`).
    pub labelled: usize,
    pub policy_records: usize,
    pub value_records: usize,
}

/// What `run_offline` read and wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct OfflineReport {
    /// Non-blank lines read.
    pub lines: usize,
    pub bad_lines: Vec<BadLine>,
    pub labelled: usize,
    pub skipped_failed: usize,
    pub skipped_pending: usize,
    pub policy_records: usize,
    pub value_records: usize,
    /// In `DataSource::ALL` order, sources with at least one labelled question.
    pub per_source: Vec<SourceCounts>,
    /// Metrics of every readable, non-duplicate question.
    pub metrics: RunMetrics,
}

/// A parsed results file.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultsFile {
    /// Each readable question with its 1-based line number.
    pub results: Vec<(usize, QuestionResult)>,
    pub bad_lines: Vec<BadLine>,
    /// Non-blank lines.
    pub lines: usize,
}

/// Reads a results JSONL file; lines that do not parse (or are not UTF-8) are reported
/// with their numbers, not fatal. Blank lines are ignored.
pub fn read_results(path: &Path) -> Result<ResultsFile, OfflineError> {
    let read_err = |source| OfflineError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = BufReader::new(File::open(path).map_err(read_err)?);
    let mut file = ResultsFile {
        results: Vec::new(),
        bad_lines: Vec::new(),
        lines: 0,
    };
    let mut buf = Vec::new();
    let mut number = 0;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(read_err)? == 0 {
            break;
        }
        number += 1;
        let parsed = match std::str::from_utf8(&buf) {
            Err(e) => Err(format!("not UTF-8: {e}")),
            Ok(line) if line.trim().is_empty() => continue,
            Ok(line) => serde_json::from_str::<QuestionResult>(line).map_err(|e| e.to_string()),
        };
        file.lines += 1;
        match parsed {
            Ok(result) => file.results.push((number, result)),
            Err(message) => file.bad_lines.push(BadLine {
                line: number,
                message,
            }),
        }
    }
    Ok(file)
}

/// The question a results line describes (no context or rationales: the format has
/// none).
pub fn question_of(result: &QuestionResult) -> Question {
    Question {
        id: result.question_id.clone(),
        source: result.source,
        image: result.image.clone(),
        question: result.question.clone(),
        choices: result.choices.clone(),
        answer: result.answer,
        rationales: Vec::new(),
        context: result.context.clone(),
    }
}

/// The body of `tsst label`: read, label, write both datasets, count.
///
/// Nothing is written unless every question could be turned into records, so a bad
/// `--image-root` leaves earlier datasets untouched.
pub fn run_offline(args: &OfflineArgs) -> Result<OfflineReport, OfflineError> {
    if args.value_out == args.policy_out {
        return Err(OfflineError::SameOutput(args.value_out.clone()));
    }
    let file = read_results(&args.input)?;
    let options = DatasetOptions {
        k: args.k,
        image_root: args.image_root.clone(),
        ..DatasetOptions::default()
    };
    let mut report = OfflineReport {
        lines: file.lines,
        bad_lines: file.bad_lines,
        labelled: 0,
        skipped_failed: 0,
        skipped_pending: 0,
        policy_records: 0,
        value_records: 0,
        per_source: Vec::new(),
        metrics: RunMetrics::default(),
    };
    let mut counts: Vec<SourceCounts> = DataSource::ALL
        .iter()
        .map(|&source| SourceCounts {
            source,
            labelled: 0,
            policy_records: 0,
            value_records: 0,
        })
        .collect();
    let mut seen = HashSet::new();
    let mut kept: Vec<&QuestionResult> = Vec::new();
    let mut policy = Vec::new();
    let mut value = Vec::new();
    for (line, result) in &file.results {
        if !seen.insert((result.source, result.question_id.as_str())) {
            report.bad_lines.push(BadLine {
                line: *line,
                message: format!(
                    "question {} ({}) appears again; skipped",
                    result.question_id, result.source
                ),
            });
            continue;
        }
        kept.push(result);
        match result.status {
            QuestionStatus::Failed => report.skipped_failed += 1,
            QuestionStatus::Pending => report.skipped_pending += 1,
            QuestionStatus::Done => {
                let question = question_of(result);
                let wrap = |source| OfflineError::Question {
                    path: args.input.clone(),
                    line: *line,
                    source,
                };
                let p = policy_records(&question, &result.solutions, &options).map_err(wrap)?;
                let v = value_records(&question, &result.solutions, &options).map_err(wrap)?;
                report.labelled += 1;
                if let Some(c) = counts.iter_mut().find(|c| c.source == result.source) {
                    c.labelled += 1;
                    c.policy_records += p.len();
                    c.value_records += v.len();
                }
                policy.extend(p);
                value.extend(v);
            }
        }
    }
    report.bad_lines.sort_by_key(|b| b.line);
    report.metrics = RunMetrics::compute(kept);
    report.policy_records = policy.len();
    report.value_records = value.len();
    report.per_source = counts.into_iter().filter(|c| c.labelled > 0).collect();

    let format = if args.jsonl {
        OutputFormat::Jsonl
    } else {
        OutputFormat::JsonArray
    };
    write_records(&args.value_out, &value, format).map_err(|source| OfflineError::Write {
        what: "value (Dv)",
        source,
    })?;
    write_records(&args.policy_out, &policy, format).map_err(|source| OfflineError::Write {
        what: "policy (D+)",
        source,
    })?;
    Ok(report)
}

impl fmt::Display for OfflineReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "read {} lines: {} labelled, {} failed and {} pending skipped, {} bad lines",
            self.lines,
            self.labelled,
            self.skipped_failed,
            self.skipped_pending,
            self.bad_lines.len()
        )?;
        for bad in &self.bad_lines {
            writeln!(f, "  line {}: {}", bad.line, bad.message)?;
        }
        writeln!(
            f,
            "wrote {} policy (D+) and {} value (Dv) records",
            self.policy_records, self.value_records
        )?;
        for c in &self.per_source {
            writeln!(
                f,
                "  {:<10} {:>6} questions {:>7} D+ {:>8} Dv",
                c.source.name(),
                c.labelled,
                c.policy_records,
                c.value_records
            )?;
        }
        write!(f, "{}", self.metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn missing_input_names_the_file() {
        let args = OfflineArgs::new(
            PathBuf::from("/no/such/results.jsonl"),
            PathBuf::from("dv.json"),
            PathBuf::from("dp.json"),
        );
        let err = run_offline(&args)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("/no/such/results.jsonl"), "{err}");
    }

    #[test]
    fn same_output_is_refused() {
        let args = OfflineArgs::new(
            PathBuf::from("r.jsonl"),
            PathBuf::from("x.json"),
            PathBuf::from("x.json"),
        );
        assert!(matches!(
            run_offline(&args),
            Err(OfflineError::SameOutput(_))
        ));
    }

    #[test]
    fn bad_lines_are_numbered() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("r.jsonl");
        let mut f = File::create(&path)?;
        f.write_all(b"{not json}\n\n\xff\xfe\n")?;
        drop(f);
        let file = read_results(&path)?;
        assert_eq!(file.lines, 2);
        let lines: Vec<usize> = file.bad_lines.iter().map(|b| b.line).collect();
        assert_eq!(lines, [1, 3]);
        assert!(file.bad_lines[1].message.contains("UTF-8"));
        Ok(())
    }
}
