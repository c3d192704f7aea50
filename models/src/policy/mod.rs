//! The policy: continues partial solutions by one reasoning step.
//!
//! Per batch, continuous batching: requests are admitted while their caches fit the
//! budget; each admitted request's prompt is prefilled (several together,
//! right-padded), its cache forked for the request's samples, and all rows decode
//! together, one token per decoder run, until each ends at its step delimiter,
//! end-of-sequence or token limit. Rows that finish make room for waiting requests:
//! on the device in fixed row slots (`slots`), on the host by rebuilding the batch's
//! cache as rows finish (`regroup`).
//!
//! Padding. Rows keep a mask over their cache slots:
//! - genai route (GroupQueryAttention): the operator writes a row's new position
//!   right after its real ones and derives its rotary position from the mask's sum,
//!   so a row's mask is always ones for its real positions followed by zeros.
//! - torch route: the new position is appended after the padding; the mask marks the
//!   padded slots 0 and `position_ids` carries the row's true position.
//!
//! Where the caches live is the model's [`KvMode`]: host tensors on the CPU; on CUDA
//! they stay on the device (IoBinding), in one shared past/present buffer per cache
//! tensor for float16 genai decoders, and each step's tokens are chosen there (the
//! sample graph, `ops::sample_graph`): only a token and a log-probability per row
//! come to the host. On the device, finished rows stay in the batch (their
//! outputs ignored) until the next regroup.
use crate::device::Device;
use crate::error::ModelError;
use crate::llava::{same_image, shared_ids, Cache, Embeds, KvMode, Llava, Prompt, Want};
use crate::manifest::{Kind, Route};
use crate::memory::{self, KvBudget};
use crate::sampling::{choose, Choice, Rng};
use crate::stop::Step;
use crate::tensor;
use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use tsst_backend::metric_names::DECODE_STEP_SECONDS;
use tsst_backend::{
    BackendError, ExpandRequest, PolicyBackend, PolicyOutput, RequestError, StepSample,
};

/// Prompts prefilled per decoder run; bounds the memory of a prefill's logits
/// (`prompts * length * vocab`).
const PREFILL_BATCH: usize = 8;

/// `0` turns off prefix reuse in row slots (on by default): a prompt that opens as a
/// row in a slot does (the same ids over the same image) copies those positions from
/// there and prefills only the rest (`slots`).
pub const SLOT_REUSE_ENV: &str = "TSST_SLOT_REUSE";

mod regroup;
mod slots;

pub struct OnnxPolicy {
    model: Llava,
    budget: KvBudget,
    /// `KvMode::Shared`: the row slots, kept between batches.
    pool: Option<crate::llava::SlotPool>,
    /// Per slot of `pool`, what a finished row left there (its cache stays until a
    /// new row takes the slot), and when: a later prompt may open the same way.
    kept: Vec<Option<(u64, Arc<Opening>)>>,
    /// Counts finished rows, to give the longest-kept slots out first.
    finished: u64,
    /// Prefix reuse in row slots (`set_slot_reuse`).
    slot_reuse: bool,
}

/// A request that decodes: its index in the batch, its prompt, its step budget.
type Live = (usize, Prompt, usize);

/// What one continuous decode did, for its log line and for the out-of-memory retry.
#[derive(Debug, Default)]
struct Stats {
    /// Times waiting requests were admitted (with row slots), or the batch rebuilt
    /// (host and bound modes; each rebuild admits what fits).
    admissions: usize,
    steps: usize,
    most_rows: usize,
    /// Requests in the batch at the last regroup (all of them with row slots), and its
    /// planned peak cache bytes.
    requests: usize,
    cost: u64,
    /// Milliseconds admitting requests into row slots (prefills and gathers) and
    /// decoding steps over them (shared-buffer batches).
    admit_ms: f64,
    /// Admissions that copied the start of their prompt from a slot.
    prefixes_copied: usize,
    steps_ms: f64,
}

/// A sampled step with the token ids the model generated for it (including an
/// end-of-sequence token, and tokens past a "Step k:" cut).
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub sample: StepSample,
    pub ids: Vec<i64>,
}

pub type GeneratedOutput = Result<Vec<Generated>, RequestError>;

/// One sample being generated.
struct Row {
    request: usize,
    sample: usize,
    rng: Rng,
    step: Step,
    /// Mask over this row's cache positions (see the module docs; unused in a row slot,
    /// whose mask follows from `valid`).
    slots: Vec<i64>,
    /// Real positions so far: the next token's position.
    valid: usize,
    budget: usize,
    /// Its prompt as its slot holds it (prefix reuse in row slots only).
    opening: Option<Arc<Opening>>,
}

/// Ids a slot holds the cache of, over one image: a row's prompt (with the image
/// token once) or, once the row is over, its prompt and the tokens it fed. A later
/// prompt with the same first ids over the same image has the same cache there
/// (causal attention), so it copies those positions and prefills only the rest.
#[derive(Debug)]
struct Opening {
    ids: Vec<i64>,
    features: Option<Arc<Vec<f32>>>,
    /// The positions `ids` take.
    positions: usize,
}

impl Opening {
    fn of(model: &Llava, prompt: &Prompt) -> Arc<Opening> {
        Arc::new(Opening {
            ids: prompt.ids.clone(),
            features: prompt.features.clone(),
            positions: model.embedded_len(prompt),
        })
    }

    /// What `row` (whose prompt this is) leaves in its slot: its prompt and the
    /// tokens fed after it.
    fn left_by(&self, row: &Row) -> Arc<Opening> {
        let mut ids = self.ids.clone();
        ids.extend_from_slice(self.fed(row));
        Arc::new(Opening {
            ids,
            features: self.features.clone(),
            positions: row.valid,
        })
    }

    /// The generated ids `row` fed into its slot (its last one is not in yet).
    fn fed<'r>(&self, row: &'r Row) -> &'r [i64] {
        let n = row.valid.saturating_sub(self.positions);
        &row.step.ids[..n.min(row.step.ids.len())]
    }

    /// How many first ids of `prompt` a slot holding these ids then `more` has:
    /// none over another image; never all of them (the last one runs, for the
    /// logits of the first token).
    fn shared_with(&self, more: &[i64], prompt: &Prompt) -> usize {
        if !same_image(&self.features, &prompt.features) {
            return 0;
        }
        shared_ids(self.ids.iter().chain(more), &prompt.ids).min(prompt.ids.len().saturating_sub(1))
    }
}

impl OnnxPolicy {
    pub fn load(dir: &Path, device: Device, ort_lib: Option<&Path>) -> Result<Self, ModelError> {
        let mut model = Llava::load(dir, Kind::Policy, device, ort_lib)?;
        let mut budget =
            KvBudget::for_decoder(&model.manifest.decoder, model.manifest.dtype, device);
        // Question stems are off unless TSST_STEM_CACHE_MB asks for them; their bytes
        // come out of the slots' budget (measured at the 7B shape on an H100: a third
        // of it for stems left 27 slots instead of 41, and no faster search while the
        // value model is the bottleneck; bench/RESULTS.md).
        let stems = model.set_stem_bytes(0);
        budget.limit = budget.limit.saturating_sub(stems);
        tracing::info!(
            model = %model.label(),
            budget_mib = budget.limit >> 20,
            stems_mib = stems >> 20,
            bytes_per_position = budget.per_position,
            "cache budget per batch"
        );
        let mut policy = OnnxPolicy {
            model,
            budget,
            pool: None,
            kept: Vec::new(),
            finished: 0,
            slot_reuse: false,
        };
        policy.set_slot_reuse(std::env::var(SLOT_REUSE_ENV).as_deref() != Ok("0"));
        Ok(policy)
    }

    /// Whether a prompt copies the positions it shares with a slot's cache from there
    /// (row slots only: `KvMode::Shared`; on by default).
    pub fn set_slot_reuse(&mut self, on: bool) {
        self.slot_reuse = on;
    }

    /// The cache bytes one batch may hold; a larger batch is decoded in parts.
    pub fn set_kv_budget(&mut self, limit: u64) {
        self.budget.limit = limit;
    }

    pub fn kv_budget(&self) -> KvBudget {
        self.budget
    }

    pub fn model(&mut self) -> &mut Llava {
        &mut self.model
    }

    /// The token ids of the prompt for `question` continued from `partial`.
    pub fn prompt_ids(
        &mut self,
        question: &tsst_messages::Question,
        partial: &str,
    ) -> Result<Vec<i64>, ModelError> {
        let prompts = self.model.prompts(&[(question, partial)])?;
        match prompts.into_iter().next() {
            Some(Ok(p)) => Ok(p.ids),
            Some(Err(e)) => Err(ModelError::run(&self.model.label(), e)),
            None => Err(ModelError::run(&self.model.label(), "no prompt")),
        }
    }

    /// [`PolicyBackend::expand`] with the generated token ids.
    pub fn generate(
        &mut self,
        batch: &[ExpandRequest<'_>],
    ) -> Result<Vec<GeneratedOutput>, ModelError> {
        let items: Vec<_> = batch.iter().map(|r| (r.question, r.prefix)).collect();
        let prompts = self.model.prompts(&items)?;
        let max_length = self.model.manifest.decoder.max_length;
        let mut out: Vec<Option<GeneratedOutput>> = vec![None; batch.len()];
        let mut live: Vec<Live> = Vec::new();
        for (i, (req, prompt)) in batch.iter().zip(prompts).enumerate() {
            let prompt = match prompt {
                Ok(p) => p,
                Err(e) => {
                    out[i] = Some(Err(RequestError(e)));
                    continue;
                }
            };
            let len = self.model.embedded_len(&prompt);
            if len >= max_length {
                out[i] = Some(Err(RequestError(format!(
                    "the prompt takes {len} positions; the model takes at most {max_length}"
                ))));
                continue;
            }
            let budget = (req.max_new_tokens as usize).min(max_length - len);
            if req.seeds.is_empty() || budget == 0 {
                out[i] = Some(Ok(req.seeds.iter().map(|_| empty_sample()).collect()));
                continue;
            }
            live.push((i, prompt, budget));
        }
        self.decode_fitting(batch, live, &mut out)?;
        Ok(out
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(RequestError("not generated".into()))))
            .collect())
    }

    /// Decodes `live`; if the device runs out of memory all the same, the requests not
    /// yet finished start again under a smaller budget (which later batches keep), so
    /// that no request fails for want of memory while it fits alone.
    fn decode_fitting(
        &mut self,
        batch: &[ExpandRequest<'_>],
        live: Vec<Live>,
        out: &mut [Option<GeneratedOutput>],
    ) -> Result<(), ModelError> {
        let mut live = live;
        let start = std::time::Instant::now();
        loop {
            let mut stats = Stats::default();
            // Step times count this attempt's steps only.
            self.model.take_step_times();
            let graphs = self.model.graphs_on();
            let result = if self.model.kv_mode() == KvMode::Shared {
                self.decode_slots(batch, &live, out, &mut stats)
            } else {
                self.decode_regrouping(batch, &live, out, &mut stats)
            };
            match result {
                Err(e) if stats.requests > 1 && memory::is_out_of_memory(&e.to_string()) => {
                    self.budget.limit = self.budget.limit.min(stats.cost) / 4 * 3;
                    self.model.drop_stems();
                    live.retain(|(i, _, _)| out[*i].is_none());
                    tracing::warn!(
                        requests = stats.requests,
                        unfinished = live.len(),
                        budget_mib = self.budget.limit >> 20,
                        error = %e,
                        "out of device memory; decoding the unfinished requests again under a smaller budget"
                    );
                }
                Err(_) if graphs && !self.model.graphs_on() => {
                    // A CUDA graph step failed and the model gave graphs up (`graph`).
                    live.retain(|(i, _, _)| out[*i].is_none());
                }
                result => {
                    // Host-side ms a step around the decoder's kernels (`StepTimes`), also
                    // as a histogram the worker exports.
                    let times = self.model.take_step_times();
                    let [inputs, bind, run, sample] = times.per_step();
                    if times.steps > 0 {
                        for (phase, ms) in [
                            ("inputs", inputs),
                            ("bind", bind),
                            ("run", run),
                            ("sample", sample),
                        ] {
                            metrics::histogram!(DECODE_STEP_SECONDS, "phase" => phase)
                                .record(ms / 1e3);
                        }
                    }
                    tracing::debug!(
                        requests = live.len(),
                        admissions = stats.admissions,
                        most_rows = stats.most_rows,
                        steps = stats.steps,
                        prefilled = self.model.prefilled(),
                        stems = self.model.stems().entries(),
                        stem_hits = self.model.stems().hits,
                        stem_misses = self.model.stems().misses,
                        prefixes_copied = stats.prefixes_copied,
                        ms = start.elapsed().as_millis() as u64,
                        admit_ms = stats.admit_ms as u64,
                        steps_ms = stats.steps_ms as u64,
                        step_inputs_ms = %format!("{inputs:.3}"),
                        step_bind_ms = %format!("{bind:.3}"),
                        step_run_ms = %format!("{run:.3}"),
                        step_sample_ms = %format!("{sample:.3}"),
                        "batch decoded"
                    );
                    return result;
                }
            }
        }
    }

    /// Prefills the prompts of `chunk` together and starts each request's samples:
    /// each row's first token is drawn from its prompt's last logits, a sample that
    /// ends there is written to `samples`. Returns the prompts' caches (right-padded,
    /// one row per prompt) and the rows still running, each with its prompt's row in
    /// them; a row's mask covers its prompt (`slots`, in the prefill's width).
    fn start(
        &mut self,
        batch: &[ExpandRequest<'_>],
        chunk: &[&Live],
        samples: &mut [Vec<Option<Generated>>],
    ) -> Result<(Cache, Vec<(Row, usize)>), ModelError> {
        let refs: Vec<&Prompt> = chunk.iter().map(|(_, p, _)| p).collect();
        let (lens, run) = self.model.prefill_last(&refs)?;
        self.model.count_prefilled(lens.iter().sum());
        let seq = lens.iter().copied().max().unwrap_or(0);
        let mut running = Vec::new();
        for (b, live) in chunk.iter().enumerate() {
            let slots: Vec<i64> = (0..seq).map(|t| i64::from(t < lens[b])).collect();
            for row in self.begin(batch, live, &run.picked[b], lens[b], slots, samples)? {
                running.push((row, b));
            }
        }
        Ok((run.presents, running))
    }

    /// A request's samples from its prompt's last logits (the prompt `len` positions,
    /// masked by `slots`): each draws its first token; those that end there go to
    /// `samples`, the others are returned.
    fn begin(
        &self,
        batch: &[ExpandRequest<'_>],
        (request, _, budget): &Live,
        logits: &[f32],
        len: usize,
        slots: Vec<i64>,
        samples: &mut [Vec<Option<Generated>>],
    ) -> Result<Vec<Row>, ModelError> {
        let req = &batch[*request];
        let mut running = Vec::new();
        for (sample, &seed) in req.seeds.iter().enumerate() {
            let mut row = Row {
                request: *request,
                sample,
                rng: Rng::new(seed),
                step: Step::default(),
                slots: slots.clone(),
                valid: len,
                budget: *budget,
                opening: None,
            };
            let choice = choose(logits, req.temperature, &mut row.rng);
            self.push(&mut row, choice, req)?;
            if row.step.done {
                samples[row.request][row.sample] = Some(finish(&row));
            } else {
                running.push(row);
            }
        }
        Ok(running)
    }

    /// Adds a chosen token to the row's step.
    fn push(
        &self,
        row: &mut Row,
        choice: Choice,
        req: &ExpandRequest<'_>,
    ) -> Result<(), ModelError> {
        let mut ids = row.step.ids.clone();
        ids.push(choice.token);
        let text = self.model.tokenizer.decode(&ids)?;
        let eos = choice.token == self.model.manifest.special_tokens.eos;
        row.step.push(
            choice.token,
            choice.logprob,
            text,
            eos,
            req.delimiter,
            row.budget,
        );
        Ok(())
    }
}

/// Writes the samples of every request whose samples have all finished.
fn settle(
    live: &[Live],
    samples: &mut [Vec<Option<Generated>>],
    out: &mut [Option<GeneratedOutput>],
) {
    for (request, _, _) in live {
        let s = &mut samples[*request];
        if out[*request].is_none() && !s.is_empty() && s.iter().all(Option::is_some) {
            out[*request] = Some(Ok(s.drain(..).flatten().collect()));
        }
    }
}

/// The mask of a decode step for a row with cache `slots` and `valid` real
/// positions (see the module docs); it is also the row's slots afterwards.
fn next_mask(route: Route, slots: &[i64], valid: usize) -> Vec<i64> {
    let mut next = slots.to_vec();
    match route {
        Route::Torch => next.push(1),
        Route::Genai => {
            next.push(0);
            next[valid] = 1;
        }
    }
    next
}

fn finish(row: &Row) -> Generated {
    let f = row.step.finish();
    Generated {
        sample: StepSample {
            text: f.text,
            logprob: f.logprob,
            tokens: f.tokens,
            eos: f.eos,
        },
        ids: row.step.ids.clone(),
    }
}

fn empty_sample() -> Generated {
    Generated {
        sample: StepSample::default(),
        ids: Vec::new(),
    }
}

impl PolicyBackend for OnnxPolicy {
    fn name(&self) -> String {
        format!("onnx policy {}", self.model.label())
    }

    fn expand(&mut self, batch: &[ExpandRequest<'_>]) -> Result<Vec<PolicyOutput>, BackendError> {
        let generated = self.generate(batch).map_err(|e| BackendError {
            backend: self.name(),
            reason: e.to_string(),
        })?;
        Ok(generated
            .into_iter()
            .map(|r| r.map(|g| g.into_iter().map(|g| g.sample).collect()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genai_masks_stay_right_padded() {
        // A 2-token prompt in a 4-slot prefill: the new position follows the real ones.
        let m = next_mask(Route::Genai, &[1, 1, 0, 0], 2);
        assert_eq!(m, vec![1, 1, 1, 0, 0]);
        let m = next_mask(Route::Genai, &m, 3);
        assert_eq!(m, vec![1, 1, 1, 1, 0, 0]);
    }

    #[test]
    fn torch_masks_append_after_the_padding() {
        let m = next_mask(Route::Torch, &[1, 1, 0, 0], 2);
        assert_eq!(m, vec![1, 1, 0, 0, 1]);
    }
}
