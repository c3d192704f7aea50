//! Run metrics (TSST.md, "Verification"): `greedy`, `absolute`, `voting` and the
//! reference's `half_correct`, per data source and overall.
//!
//! A solution counts as correct only with a verdict that says so; unverified ones
//! count as wrong. Failed questions, and pending ones (an interrupted run's unfinished
//! questions), are left out of every rate and counted on their own; a question without
//! solutions is wrong for greedy, voting and half_correct and adds nothing to absolute.
use crate::extract::extract_answer;
use crate::rule::{normalize_text, resolve_choice};
use std::fmt;
use tsst_messages::results::{QuestionResult, QuestionStatus, Solution};
use tsst_messages::DataSource;

/// Counts behind the rates of one group of questions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Questions that did not fail.
    pub questions: usize,
    /// Failed questions (not in any rate).
    pub failed: usize,
    /// Questions still pending, e.g. when a run was interrupted (not in any rate).
    pub pending: usize,
    /// Solutions of the counted questions.
    pub solutions: usize,
    pub correct_solutions: usize,
    /// Questions whose highest-value (first) solution is correct.
    pub greedy: usize,
    /// Questions whose majority answer is correct.
    pub voting: usize,
    /// Questions with at least half of their solutions correct.
    pub half_correct: usize,
    /// Solutions checked against a grounded chain (synthetic data), and those whose
    /// every step is a fact of the scene (`faithful`).
    pub checked: usize,
    pub grounded: usize,
}

fn rate(n: usize, d: usize) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

impl Tally {
    pub fn greedy_rate(&self) -> Option<f64> {
        rate(self.greedy, self.questions)
    }
    pub fn absolute_rate(&self) -> Option<f64> {
        rate(self.correct_solutions, self.solutions)
    }
    pub fn voting_rate(&self) -> Option<f64> {
        rate(self.voting, self.questions)
    }
    pub fn half_correct_rate(&self) -> Option<f64> {
        rate(self.half_correct, self.questions)
    }
    /// Share of checked solutions whose steps are all facts of the scene.
    pub fn faithful_rate(&self) -> Option<f64> {
        rate(self.grounded, self.checked)
    }

    /// Counts one question in.
    pub fn add(&mut self, result: &QuestionResult) {
        match result.status {
            QuestionStatus::Failed => {
                self.failed += 1;
                return;
            }
            QuestionStatus::Pending => {
                self.pending += 1;
                return;
            }
            QuestionStatus::Done => {}
        }
        self.questions += 1;
        let correct = result.solutions.iter().filter(|s| is_correct(s)).count();
        self.solutions += result.solutions.len();
        self.correct_solutions += correct;
        for g in result
            .solutions
            .iter()
            .filter_map(|s| s.verdict.as_ref()?.grounded)
        {
            self.checked += 1;
            self.grounded += usize::from(g);
        }
        if result.solutions.first().is_some_and(is_correct) {
            self.greedy += 1;
        }
        if vote_is_correct(result) {
            self.voting += 1;
        }
        if !result.solutions.is_empty() && 2 * correct >= result.solutions.len() {
            self.half_correct += 1;
        }
    }

    fn merge(&mut self, other: &Tally) {
        self.questions += other.questions;
        self.failed += other.failed;
        self.pending += other.pending;
        self.solutions += other.solutions;
        self.correct_solutions += other.correct_solutions;
        self.greedy += other.greedy;
        self.voting += other.voting;
        self.half_correct += other.half_correct;
        self.checked += other.checked;
        self.grounded += other.grounded;
    }
}

fn is_correct(solution: &Solution) -> bool {
    solution.verdict.as_ref().is_some_and(|v| v.correct)
}

/// What a solution votes for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Vote {
    /// An option, by index.
    Choice(usize),
    /// An answer no option could be read from, normalised.
    Text(String),
}

fn letter_index(letter: char) -> Option<usize> {
    let upper = letter.to_ascii_uppercase();
    upper
        .is_ascii_uppercase()
        .then(|| usize::from(upper as u8 - b'A'))
}

fn vote_of(solution: &Solution, choices: &[String]) -> Vote {
    if let Some(i) = solution
        .verdict
        .as_ref()
        .and_then(|v| v.letter)
        .and_then(letter_index)
        .filter(|&i| i < choices.len())
    {
        return Vote::Choice(i);
    }
    let extracted = match &solution.verdict {
        Some(v) => v.extracted.clone(),
        None => extract_answer(&solution.text),
    };
    match resolve_choice(&extracted, choices) {
        Some(i) => Vote::Choice(i),
        None => Vote::Text(normalize_text(&extracted)),
    }
}

/// Majority vote over the answers. A tie goes to the tied answer whose best solution
/// ranks first (solutions are listed best value first), so the search's own ranking
/// breaks it and the result never depends on hashing. An option wins correctly when it
/// is the right one; a free-text answer when its best solution's verdict is correct.
fn vote_is_correct(result: &QuestionResult) -> bool {
    // (vote, count, index of its first solution); first-seen order is rank order.
    let mut tally: Vec<(Vote, usize, usize)> = Vec::new();
    for (i, solution) in result.solutions.iter().enumerate() {
        let vote = vote_of(solution, &result.choices);
        match tally.iter_mut().find(|(v, _, _)| *v == vote) {
            Some(entry) => entry.1 += 1,
            None => tally.push((vote, 1, i)),
        }
    }
    // `max_by_key` keeps the last maximum; scanning by hand keeps the first.
    let mut winner: Option<&(Vote, usize, usize)> = None;
    for entry in &tally {
        if winner.is_none_or(|w| entry.1 > w.1) {
            winner = Some(entry);
        }
    }
    match winner {
        None => false,
        Some((Vote::Choice(i), _, _)) => *i == result.answer,
        Some((Vote::Text(_), _, first)) => result.solutions.get(*first).is_some_and(is_correct),
    }
}

/// Metrics of a run: every source present, then all together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunMetrics {
    /// In `DataSource::ALL` order; sources without questions are left out.
    pub per_source: Vec<(DataSource, Tally)>,
    pub overall: Tally,
}

impl RunMetrics {
    pub fn compute<'a>(results: impl IntoIterator<Item = &'a QuestionResult>) -> RunMetrics {
        let mut by_source = [Tally::default(); DataSource::ALL.len()];
        for result in results {
            if let Some(slot) = DataSource::ALL.iter().position(|s| *s == result.source) {
                by_source[slot].add(result);
            }
        }
        let mut overall = Tally::default();
        let mut per_source = Vec::new();
        for (source, tally) in DataSource::ALL.iter().zip(by_source) {
            if tally.questions + tally.failed + tally.pending > 0 {
                overall.merge(&tally);
                per_source.push((*source, tally));
            }
        }
        RunMetrics {
            per_source,
            overall,
        }
    }
}

impl fmt::Display for RunMetrics {
    /// A table with one row per source and an `all` row; `-` where a rate has no
    /// denominator.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn cell(r: Option<f64>) -> String {
            r.map_or_else(|| "-".to_string(), |r| format!("{r:.3}"))
        }
        // Only where some question had not finished (an interrupted run).
        let pending = self.overall.pending > 0;
        writeln!(
            f,
            "{:<10} {:>9} {:>6}{} {:>9} {:>7} {:>8} {:>7} {:>12}{}",
            "source",
            "questions",
            "failed",
            if pending { "  pending" } else { "" },
            "solutions",
            "greedy",
            "absolute",
            "voting",
            "half_correct",
            // Only where chains were checked against a scene.
            if self.overall.checked > 0 {
                "  faithful"
            } else {
                ""
            }
        )?;
        let all = ("all", &self.overall);
        let rows = self
            .per_source
            .iter()
            .map(|(s, t)| (s.name(), t))
            .chain(std::iter::once(all));
        for (name, t) in rows {
            let faithful = if self.overall.checked > 0 {
                format!(" {:>9}", cell(t.faithful_rate()))
            } else {
                String::new()
            };
            let pending = if pending {
                format!(" {:>8}", t.pending)
            } else {
                String::new()
            };
            writeln!(
                f,
                "{:<10} {:>9} {:>6}{pending} {:>9} {:>7} {:>8} {:>7} {:>12}{faithful}",
                name,
                t.questions,
                t.failed,
                t.solutions,
                cell(t.greedy_rate()),
                cell(t.absolute_rate()),
                cell(t.voting_rate()),
                cell(t.half_correct_rate())
            )?;
        }
        Ok(())
    }
}

impl Tally {
    /// Counts and rates as written to a run's `metrics.json`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "questions": self.questions,
            "failed": self.failed,
            "pending": self.pending,
            "solutions": self.solutions,
            "greedy": self.greedy_rate(),
            "absolute": self.absolute_rate(),
            "voting": self.voting_rate(),
            "half_correct": self.half_correct_rate(),
            "faithful": self.faithful_rate(),
        })
    }
}

impl RunMetrics {
    /// `{"overall": {...}, "per_source": {"aokvqa": {...}, ...}}`
    pub fn to_json(&self) -> serde_json::Value {
        let per_source: serde_json::Map<String, serde_json::Value> = self
            .per_source
            .iter()
            .map(|(s, t)| (s.name().to_owned(), t.to_json()))
            .collect();
        serde_json::json!({ "overall": self.overall.to_json(), "per_source": per_source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsst_messages::{FinishReason, NodeId, Verdict, VerdictSource};

    fn sol(text: &str, correct: Option<bool>, letter: Option<char>) -> Solution {
        Solution {
            node: NodeId(0),
            text: text.to_string(),
            steps: vec![text.to_string()],
            values: vec![None],
            value: None,
            mean_logprob: 0.0,
            finish: FinishReason::Answer,
            verdict: correct.map(|c| Verdict {
                correct: c,
                extracted: extract_answer(text),
                letter,
                by: VerdictSource::Rule,
                note: None,
                grounded: None,
            }),
        }
    }

    fn result(
        source: DataSource,
        status: QuestionStatus,
        solutions: Vec<Solution>,
    ) -> QuestionResult {
        QuestionResult {
            run: "r".to_string(),
            question_id: "q".to_string(),
            source,
            image: None,
            question: "?".to_string(),
            context: None,
            choices: vec!["dog".into(), "whale".into(), "cat".into()],
            answer: 1,
            status,
            error: None,
            rounds: 1,
            restarts: 0,
            solutions,
        }
    }

    #[test]
    fn greedy_absolute_voting_half() {
        use DataSource::*;
        use QuestionStatus::*;
        // q1: best wrong, majority (2 of 3) right → greedy no, voting yes, half yes.
        let q1 = result(
            Aokvqa,
            Done,
            vec![
                sol("Final Answer: A", Some(false), Some('A')),
                sol("Final Answer: B", Some(true), Some('B')),
                sol("Final Answer: (B) whale", Some(true), None),
            ],
        );
        // q2: 1-1 tie between A (ranked first) and B → voting follows A: wrong.
        // Half correct: 1 of 2 → yes. Greedy: first is A → no.
        let q2 = result(
            Aokvqa,
            Done,
            vec![
                sol("Final Answer: A", Some(false), Some('A')),
                sol("Final Answer: B", Some(true), Some('B')),
            ],
        );
        // q3: no solutions → wrong everywhere, 0 solutions.
        let q3 = result(Scienceqa, Done, vec![]);
        // q4: failed → excluded.
        let q4 = result(
            Scienceqa,
            Failed,
            vec![sol("Final Answer: B", Some(true), Some('B'))],
        );
        // q5: unverified solutions count as wrong, but the vote reads the text: B wins.
        let q5 = result(
            Scienceqa,
            Done,
            vec![
                sol("Final Answer: B", None, None),
                sol("Final Answer: whale", None, None),
            ],
        );
        // q6: still pending (an interrupted run) → counted apart, in no rate.
        let q6 = result(
            Scienceqa,
            Pending,
            vec![sol("Final Answer: B", Some(true), Some('B'))],
        );
        let m = RunMetrics::compute(&[q1, q2, q3, q4, q5, q6]);
        let a = m.per_source[0].1;
        assert_eq!(m.per_source[0].0, Aokvqa);
        assert_eq!(
            a,
            Tally {
                questions: 2,
                failed: 0,
                pending: 0,
                solutions: 5,
                correct_solutions: 3,
                greedy: 0,
                voting: 1,
                half_correct: 2,
                checked: 0,
                grounded: 0,
            }
        );
        let s = m.per_source[1].1;
        assert_eq!(
            (
                s.questions,
                s.failed,
                s.pending,
                s.solutions,
                s.correct_solutions
            ),
            (2, 1, 1, 2, 0)
        );
        assert_eq!((s.greedy, s.voting, s.half_correct), (0, 1, 0));
        assert_eq!(m.overall.questions, 4);
        assert_eq!(m.overall.failed, 1);
        assert_eq!(m.overall.pending, 1);
        assert_eq!(m.overall.absolute_rate(), Some(3.0 / 7.0));
        assert_eq!(m.overall.voting_rate(), Some(0.5));
        let table = m.to_string();
        assert!(table.contains("half_correct") && table.contains("pending"));
        assert!(table.lines().any(|l| l.starts_with("all")));
        assert_eq!(table.lines().count(), 4);
    }

    #[test]
    fn free_text_votes() {
        // Two solutions answer the same free text (no option), one answers C.
        let q = result(
            DataSource::Vcr,
            QuestionStatus::Done,
            vec![
                sol("Final Answer: a large marine mammal", Some(true), None),
                sol("Final Answer: A large marine mammal.", Some(true), None),
                sol("Final Answer: C", Some(false), Some('C')),
            ],
        );
        let m = RunMetrics::compute(&[q]);
        assert_eq!(m.overall.voting, 1);
        assert_eq!(m.overall.greedy, 1);
    }

    #[test]
    fn answers_the_llm_verified_vote_with_their_option() {
        use crate::llm_prompt::{llm_verdict, LlmWord};
        let choices: Vec<String> = vec!["dog".into(), "whale".into(), "cat".into()];
        let by_llm = |answer: &str, word: LlmWord| {
            let mut s = sol(&format!("Final Answer: {answer}"), None, None);
            s.verdict = Some(llm_verdict(answer, word, &choices, 1));
            s
        };
        // Three differently worded right answers against two for A, which ranks first:
        // as free text each would be a vote of its own and A would win.
        let q = result(
            DataSource::Aokvqa,
            QuestionStatus::Done,
            vec![
                sol("Final Answer: A", Some(false), Some('A')),
                by_llm("the big sea mammal", LlmWord::True),
                by_llm("a whale, of course", LlmWord::True),
                sol("Final Answer: (A)", Some(false), Some('A')),
                by_llm("it is a marine mammal", LlmWord::True),
            ],
        );
        assert_eq!(RunMetrics::compute(&[q]).overall.voting, 1);
    }

    #[test]
    fn empty_run_prints_dashes() {
        let m = RunMetrics::compute(&[]);
        assert!(m.per_source.is_empty());
        assert!(m.to_string().contains('-'));
        assert_eq!(m.overall.greedy_rate(), None);
        assert_eq!(letter_index('c'), Some(2));
        assert_eq!(letter_index('?'), None);
    }
}
