//! The scripted backend: steps and values computed from the question, the text and the
//! seed by a fixed rule, so trees are known in advance. Tests and benchmarks use it to
//! exercise the whole system at zero model cost.
use super::{
    BackendError, ExpandRequest, PolicyBackend, PolicyOutput, RequestError, ScoreRequest,
    StepSample, ValueBackend,
};
use std::time::Duration;
use tsst_messages::{splitmix64, stable_hash, Question};

/// Observations a scripted step makes; few enough that siblings often coincide and
/// get merged, as real samples at low temperature do.
const LOOKS: [&str; 4] = [
    "I look at the left part of the image",
    "I look at the right part of the image",
    "I compare the shapes by colour",
    "I count the shapes that match the question",
];

/// How a scripted model behaves: `latency` stands in for a model's cost per batch
/// (zero by default), so benchmarks and tests can see how the system behaves when the
/// model is the bottleneck; with `per` it is the cost of each started group of that
/// many requests instead, as a GPU's batch costs one pass of its row slots per slots'
/// worth of rows (a part-full batch costs less than a full one, down to one pass);
/// `fail_every` makes every k-th batch fail as a device out
/// of memory would, to test that such failures are retried, not charged to questions;
/// `panic_every` makes every k-th batch panic, as a crashing native library would, to
/// test that the model's actor is restarted and the tasks retried.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Scripted {
    pub latency: Duration,
    pub per: Option<u32>,
    pub fail_every: Option<u32>,
    pub panic_every: Option<u32>,
}

impl Scripted {
    /// Sleeps the latency for a batch of `requests`; fails the `fail_every`-th call,
    /// panics on the `panic_every`-th (counted since the backend was made).
    fn call(&self, requests: usize, calls: &mut u32, backend: &str) -> Result<(), BackendError> {
        let groups = self
            .per
            .map_or(1, |k| requests.div_ceil(k as usize).max(1) as u32);
        std::thread::sleep(self.latency * groups);
        *calls += 1;
        if matches!(self.panic_every, Some(k) if (*calls).is_multiple_of(k)) {
            panic!("{backend}: injected panic on call {calls}");
        }
        match self.fail_every {
            Some(k) if k > 0 && (*calls).is_multiple_of(k) => Err(BackendError {
                backend: backend.into(),
                reason: "injected transient failure (out of memory)".into(),
            }),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct ScriptedPolicy {
    pub behaviour: Scripted,
    calls: u32,
}

#[derive(Debug, Default, Clone)]
pub struct ScriptedValue {
    pub behaviour: Scripted,
    calls: u32,
}

impl ScriptedPolicy {
    pub fn new(behaviour: Scripted) -> Self {
        ScriptedPolicy {
            behaviour,
            calls: 0,
        }
    }
}

impl ScriptedValue {
    pub fn new(behaviour: Scripted) -> Self {
        ScriptedValue {
            behaviour,
            calls: 0,
        }
    }
}

/// Parses `scripted`, with options after colons: `<N>ms` (a simulated latency per
/// batch), `per<K>` (the latency is per started group of K requests instead),
/// `flaky<K>` (every K-th batch fails) and `panic<K>` (every K-th batch panics,
/// K >= 2), e.g. `scripted:30ms:flaky3` or `scripted:275ms:per8`.
pub fn parse_scripted(name: &str) -> Option<Scripted> {
    let rest = name.strip_prefix("scripted")?;
    let mut out = Scripted::default();
    if rest.is_empty() {
        return Some(out);
    }
    for option in rest.strip_prefix(':')?.split(':') {
        if let Some(ms) = option.strip_suffix("ms") {
            out.latency = Duration::from_millis(ms.parse().ok()?);
        } else if let Some(k) = option.strip_prefix("per") {
            out.per = Some(k.parse().ok().filter(|&k| k > 0)?);
        } else if let Some(k) = option.strip_prefix("flaky") {
            out.fail_every = Some(k.parse().ok().filter(|&k| k > 0)?);
        } else if let Some(k) = option.strip_prefix("panic") {
            // Every call panicking would never let a batch through.
            out.panic_every = Some(k.parse().ok().filter(|&k| k > 1)?);
        } else {
            return None;
        }
    }
    Some(out)
}

impl ScriptedPolicy {
    /// The step the rule writes after `prefix` for a draw `h`.
    fn step(question: &Question, prefix: &str, h: u64) -> StepSample {
        let done = prefix.matches("Step ").count();
        let text = if done >= 1 && (h.is_multiple_of(3) || done >= 3) {
            let n = question.choices.len().max(2);
            let letter = if (h >> 8) % 100 < 65 {
                question.answer
            } else {
                (question.answer + 1 + ((h >> 16) as usize % (n - 1))) % n
            };
            // A quarter of the answers name the option in words, as real models do,
            // which the rule cannot decide: they exercise the LLM verifier.
            if (h >> 32).is_multiple_of(4) {
                let text = question.choices.get(letter).map_or("", |c| c.as_str());
                format!("Final Answer: the answer is {text}.")
            } else {
                format!("Final Answer: ({}).", Question::letter(letter))
            }
        } else if h.is_multiple_of(41) {
            String::new()
        } else {
            format!("Step {}: {}.", done + 1, LOOKS[((h >> 24) % 4) as usize])
        };
        let tokens = text.split_whitespace().count() as u32;
        let per_token = 0.05 + ((h >> 40) % 100) as f64 / 200.0;
        StepSample {
            logprob: -per_token * f64::from(tokens),
            tokens,
            text,
            eos: false,
        }
    }

    /// A whole chain after `prefix` (no step delimiter): steps follow one another until
    /// the answer or an empty step, where the rule stops (end of sequence), or until
    /// `max_new_tokens`, where the chain is cut.
    fn chain(req: &ExpandRequest<'_>, draw: impl Fn(&str, u64) -> u64) -> StepSample {
        let mut out = StepSample::default();
        let mut prefix = req.prefix.to_owned();
        for k in 0.. {
            if out.tokens >= req.max_new_tokens {
                break;
            }
            let step = Self::step(req.question, &prefix, draw(&prefix, k));
            if step.text.is_empty() {
                out.eos = true;
                break;
            }
            out.text = [out.text.as_str(), step.text.as_str()]
                .join(" ")
                .trim()
                .to_owned();
            prefix = [prefix.as_str(), step.text.as_str()]
                .join(" ")
                .trim()
                .to_owned();
            out.tokens += step.tokens;
            out.logprob += step.logprob;
            if step.text.starts_with("Final Answer") {
                out.eos = true;
                break;
            }
        }
        out
    }
}

impl PolicyBackend for ScriptedPolicy {
    fn name(&self) -> String {
        "scripted policy".into()
    }

    fn expand(&mut self, batch: &[ExpandRequest<'_>]) -> Result<Vec<PolicyOutput>, BackendError> {
        self.behaviour
            .call(batch.len(), &mut self.calls, "scripted policy")?;
        Ok(batch
            .iter()
            .map(|req| {
                if req.question.choices.is_empty() {
                    return Err(RequestError("question has no choices".into()));
                }
                // Greedy decoding ignores the seed: every sample is the same step. The
                // k-th step of a whole chain draws from the seed's k-th value.
                let draw = |seed: u64, prefix: &str, k: u64| {
                    if req.temperature > 0.0 {
                        splitmix64(seed.wrapping_add(k))
                    } else {
                        stable_hash(&[b"greedy", req.question.id.as_bytes(), prefix.as_bytes()])
                    }
                };
                Ok(req
                    .seeds
                    .iter()
                    .map(|&seed| match req.delimiter {
                        Some(_) => Self::step(req.question, req.prefix, draw(seed, req.prefix, 0)),
                        None => Self::chain(req, |prefix, k| draw(seed, prefix, k)),
                    })
                    .collect())
            })
            .collect())
    }
}

impl ValueBackend for ScriptedValue {
    fn name(&self) -> String {
        "scripted value".into()
    }

    fn score(
        &mut self,
        batch: &[ScoreRequest<'_>],
    ) -> Result<Vec<Result<f64, RequestError>>, BackendError> {
        self.behaviour
            .call(batch.len(), &mut self.calls, "scripted value")?;
        Ok(batch
            .iter()
            .map(|req| {
                let h = stable_hash(&[b"value", req.question.id.as_bytes(), req.text.as_bytes()]);
                let u = (h >> 11) as f64 / (1u64 << 53) as f64;
                let right = format!("Final Answer: ({})", req.question.answer_letter());
                // Values lean towards correct answers, as a trained value model's would.
                Ok(if req.text.contains(&right) {
                    0.6 + 0.4 * u
                } else if req.text.contains("Final Answer") {
                    0.4 * u
                } else {
                    0.2 + 0.6 * u
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsst_messages::{DataSource, StepDelimiter};

    fn question() -> Question {
        Question {
            id: "q1".into(),
            source: DataSource::Aokvqa,
            image: None,
            question: "How many?".into(),
            choices: vec!["1".into(), "2".into(), "3".into(), "4".into()],
            answer: 2,
            rationales: vec![],
            context: None,
        }
    }

    const SEEDS: [u64; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

    fn request<'a>(q: &'a Question, prefix: &'a str, temperature: f64) -> ExpandRequest<'a> {
        ExpandRequest {
            question: q,
            prefix,
            seeds: &SEEDS,
            temperature,
            max_new_tokens: 64,
            delimiter: Some(StepDelimiter::Period),
        }
    }

    #[test]
    fn without_a_delimiter_the_chain_runs_to_its_answer_or_budget() {
        let q = question();
        let mut req = request(&q, "", 0.0);
        req.delimiter = None;
        let out = ScriptedPolicy::default().expand(&[req.clone()]).unwrap();
        let chain = &out[0].as_ref().unwrap()[0];
        assert!(chain.text.starts_with("Step 1:"), "{chain:?}");
        assert!(
            chain.text.contains("Final Answer") && chain.eos,
            "{chain:?}"
        );
        req.max_new_tokens = 3;
        let out = ScriptedPolicy::default().expand(&[req]).unwrap();
        let cut = &out[0].as_ref().unwrap()[0];
        assert!(!cut.eos && !cut.text.contains("Final Answer"), "{cut:?}");
    }

    #[test]
    fn same_inputs_same_steps() {
        let q = question();
        let a = ScriptedPolicy::default()
            .expand(&[request(&q, "", 0.7)])
            .unwrap();
        let b = ScriptedPolicy::default()
            .expand(&[request(&q, "", 0.7)])
            .unwrap();
        assert_eq!(a, b);
        let samples = a[0].as_ref().unwrap();
        assert_eq!(samples.len(), 8);
        assert!(samples
            .iter()
            .all(|s| s.text.is_empty() || s.text.starts_with("Step 1:")));
    }

    #[test]
    fn greedy_ignores_the_seed() {
        let q = question();
        let out = ScriptedPolicy::default()
            .expand(&[request(&q, "Step 1: x.", 0.0)])
            .unwrap();
        let samples = out[0].as_ref().unwrap();
        assert!(samples.iter().all(|s| s == &samples[0]));
    }

    #[test]
    fn chains_end_in_an_answer() {
        let q = question();
        let prefix = "Step 1: a. Step 2: b. Step 3: c.";
        let out = ScriptedPolicy::default()
            .expand(&[request(&q, prefix, 0.7)])
            .unwrap();
        assert!(out[0]
            .as_ref()
            .unwrap()
            .iter()
            .all(|s| s.text.starts_with("Final Answer:")));
    }

    #[test]
    fn latency_per_group_of_requests() {
        let mut value = ScriptedValue::new(parse_scripted("scripted:5ms:per8").unwrap());
        let q = question();
        let req: Vec<ScoreRequest<'_>> = (0..17)
            .map(|_| ScoreRequest {
                question: &q,
                text: "Step 1: x.",
            })
            .collect();
        // Three started groups of 8: at least three latencies (a sleep is never shorter).
        let t = std::time::Instant::now();
        value.score(&req).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(15));
    }

    #[test]
    fn names_give_latencies_and_failures() {
        let latency = |name| parse_scripted(name).map(|s| s.latency);
        assert_eq!(latency("scripted"), Some(Duration::ZERO));
        assert_eq!(latency("scripted:25ms"), Some(Duration::from_millis(25)));
        assert_eq!(
            parse_scripted("scripted:25ms:flaky3:panic5"),
            Some(Scripted {
                latency: Duration::from_millis(25),
                per: None,
                fail_every: Some(3),
                panic_every: Some(5),
            })
        );
        assert_eq!(
            parse_scripted("scripted:10ms:per8").map(|s| (s.latency, s.per)),
            Some((Duration::from_millis(10), Some(8)))
        );
        for bad in [
            "scripted:fast",
            "scripted:flaky0",
            "scripted:panic1",
            "scripted:per0",
            "scripted:",
            "models/llava",
        ] {
            assert_eq!(parse_scripted(bad), None, "{bad}");
        }
        let mut flaky = ScriptedValue::new(parse_scripted("scripted:flaky2").unwrap());
        let q = question();
        let req = [ScoreRequest {
            question: &q,
            text: "Step 1: x.",
        }];
        let outcomes: Vec<bool> = (0..4).map(|_| flaky.score(&req).is_ok()).collect();
        assert_eq!(outcomes, [true, false, true, false]);
        let mut panicky = ScriptedValue::new(parse_scripted("scripted:panic2").unwrap());
        assert!(panicky.score(&req).is_ok());
        let second = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| panicky.score(&req)));
        assert!(second.is_err(), "the second call panics");
    }

    #[test]
    fn values_favour_the_right_answer() {
        let q = question();
        let right = ScriptedValue::default()
            .score(&[ScoreRequest {
                question: &q,
                text: "Step 1: a. Final Answer: (C).",
            }])
            .unwrap();
        let wrong = ScriptedValue::default()
            .score(&[ScoreRequest {
                question: &q,
                text: "Step 1: a. Final Answer: (A).",
            }])
            .unwrap();
        assert!(right[0].as_ref().unwrap() >= &0.6);
        assert!(wrong[0].as_ref().unwrap() < &0.4);
    }
}
