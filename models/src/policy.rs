//! The policy: continues partial solutions by one reasoning step.
//!
//! Per batch, continuous batching: requests are admitted while their caches fit the
//! budget; each admitted request's prompt is prefilled (several together,
//! right-padded), its cache forked for the request's samples, and all rows decode
//! together, one token per decoder run, until each ends at its step delimiter,
//! end-of-sequence or token limit. Whenever a quarter of the rows have finished (or a
//! shared buffer is full) the batch regroups: finished rows leave, waiting requests
//! join, and the cache is rebuilt as wide as the rows need now.
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
use crate::llava::{Cache, Embeds, KvMode, Llava, Prompt, Want};
use crate::manifest::{Kind, Route};
use crate::memory::{self, KvBudget};
use crate::sampling::{choose, Choice, Rng};
use crate::stop::Step;
use crate::tensor;
use std::collections::{HashSet, VecDeque};
use std::path::Path;
use tsst_backend::{
    BackendError, ExpandRequest, PolicyBackend, PolicyOutput, RequestError, StepSample,
};

/// Prompts prefilled per decoder run; bounds the memory of a prefill's logits
/// (`prompts * length * vocab`).
const PREFILL_BATCH: usize = 8;

/// Positions a shared cache buffer holds beyond the longest row after a regroup: a
/// row that reaches the end makes the batch regroup into a wider one. Small, since
/// most steps end within a few dozen tokens and a row's whole step budget (256 at
/// the reference settings) reserved for every row halves the rows that fit.
const HEADROOM: usize = 64;

pub struct OnnxPolicy {
    model: Llava,
    budget: KvBudget,
}

/// A request that decodes: its index in the batch, its prompt, its step budget.
type Live = (usize, Prompt, usize);

/// What one continuous decode did, for its log line and for the out-of-memory retry.
#[derive(Debug, Default)]
struct Stats {
    regroups: usize,
    steps: usize,
    most_rows: usize,
    /// Requests in the batch at the last regroup, and that regroup's planned peak
    /// cache bytes.
    requests: usize,
    cost: u64,
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
    /// Mask over this row's cache slots (see the module docs).
    slots: Vec<i64>,
    /// Real positions so far: the next token's position.
    valid: usize,
    budget: usize,
}

impl OnnxPolicy {
    pub fn load(dir: &Path, device: Device, ort_lib: Option<&Path>) -> Result<Self, ModelError> {
        let model = Llava::load(dir, Kind::Policy, device, ort_lib)?;
        let budget = KvBudget::for_decoder(&model.manifest.decoder, model.manifest.dtype, device);
        tracing::info!(
            model = %model.label(),
            budget_mib = budget.limit >> 20,
            bytes_per_position = budget.per_position,
            "cache budget per batch"
        );
        Ok(OnnxPolicy { model, budget })
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
        loop {
            let mut stats = Stats::default();
            match self.decode_continuous(batch, &live, out, &mut stats) {
                Err(e) if stats.requests > 1 && memory::is_out_of_memory(&e.to_string()) => {
                    self.budget.limit = self.budget.limit.min(stats.cost) / 4 * 3;
                    live.retain(|(i, _, _)| out[*i].is_none());
                    tracing::warn!(
                        requests = stats.requests,
                        unfinished = live.len(),
                        budget_mib = self.budget.limit >> 20,
                        error = %e,
                        "out of device memory; decoding the unfinished requests again under a smaller budget"
                    );
                }
                result => {
                    tracing::debug!(
                        requests = live.len(),
                        regroups = stats.regroups,
                        most_rows = stats.most_rows,
                        steps = stats.steps,
                        "batch decoded"
                    );
                    return result;
                }
            }
        }
    }

    /// Decodes the requests with continuous batching: rows decode together, one token
    /// per decoder run; whenever a quarter of them have finished (or a shared buffer is
    /// full) the batch regroups, dropping finished rows and admitting waiting requests
    /// as far as the cache budget allows. So the batch does not drain to its slowest
    /// row while requests wait, and its cache holds what the rows need now (their
    /// positions plus [`HEADROOM`]) rather than each one's whole step budget.
    fn decode_continuous(
        &mut self,
        batch: &[ExpandRequest<'_>],
        live: &[Live],
        out: &mut [Option<GeneratedOutput>],
        stats: &mut Stats,
    ) -> Result<(), ModelError> {
        let mode = self.model.kv_mode();
        let shared = mode == KvMode::Shared;
        let mut samples: Vec<Vec<Option<Generated>>> =
            batch.iter().map(|r| vec![None; r.seeds.len()]).collect();
        let mut waiting: VecDeque<&Live> = live.iter().collect();
        let mut rows: Vec<Row> = Vec::new();
        let mut cache: Cache = Vec::new();
        let mut capacity = 0;
        loop {
            let finished = rows.iter().filter(|r| r.step.done).count();
            let alive = rows.len() - finished;
            let width = rows.first().map_or(0, |r| r.slots.len());
            let full = shared && alive > 0 && width + 1 > capacity;
            if alive == 0 || full || (finished > 0 && compact_now(mode, finished, rows.len())) {
                if alive == 0 && waiting.is_empty() {
                    break;
                }
                let group = self.regroup(
                    batch,
                    std::mem::take(&mut rows),
                    std::mem::take(&mut cache),
                    capacity,
                    &mut waiting,
                    &mut samples,
                    stats,
                )?;
                (rows, cache, capacity) = group;
                stats.regroups += 1;
                stats.most_rows = stats.most_rows.max(rows.len());
                settle(live, &mut samples, out);
                if rows.is_empty() {
                    continue;
                }
            }
            self.step(batch, &mut rows, &mut cache, shared, &mut samples)?;
            stats.steps += 1;
            settle(live, &mut samples, out);
        }
        settle(live, &mut samples, out);
        Ok(())
    }

    /// One decoder run for every row: the next token of each, written to its step.
    fn step(
        &mut self,
        batch: &[ExpandRequest<'_>],
        rows: &mut [Row],
        cache: &mut Cache,
        shared: bool,
        samples: &mut [Vec<Option<Generated>>],
    ) -> Result<(), ModelError> {
        let len = rows[0].slots.len();
        let ids: Vec<i64> = rows
            .iter()
            .map(|r| r.step.ids.last().copied().unwrap_or_default())
            .collect();
        let embeds = self.model.embed_step(ids)?;
        let mut mask = Vec::with_capacity(rows.len() * (len + 1));
        let mut positions = Vec::with_capacity(rows.len());
        for row in rows.iter_mut() {
            let next = next_mask(self.model.route(), &row.slots, row.valid);
            mask.extend_from_slice(&next);
            row.slots = next;
            positions.push(row.valid as i64);
            row.valid += 1;
        }
        // On the device the next tokens are chosen there (one uniform draw per sampled
        // row from its generator, as `choose` draws it); on the host from the logits.
        let at: Vec<(usize, usize)> = (0..rows.len()).map(|r| (r, 0)).collect();
        let (mut temperature, mut uniform) = (Vec::new(), Vec::new());
        let want = if self.model.kv_mode().on_device() {
            for row in rows.iter_mut() {
                let t = if row.step.done {
                    0.0
                } else {
                    batch[row.request].temperature
                };
                temperature.push(t as f32);
                uniform.push(if t > 0.0 {
                    row.rng.next_f64() as f32
                } else {
                    0.0
                });
            }
            Want::Sample {
                temperature: &temperature,
                uniform: &uniform,
            }
        } else {
            Want::Rows(&at)
        };
        let run = self.model.decode(
            rows.len(),
            Embeds::Value(embeds),
            mask,
            positions,
            std::mem::take(cache),
            shared,
            want,
        )?;
        *cache = run.presents;
        for (r, row) in rows.iter_mut().enumerate() {
            if row.step.done {
                // Finished earlier; kept in a device batch until the next regroup.
                continue;
            }
            let req = &batch[row.request];
            let choice = match run.choices.get(r) {
                Some(&c) => c,
                None => choose(&run.picked[r], req.temperature, &mut row.rng),
            };
            self.push(row, choice, req)?;
            if row.step.done {
                samples[row.request][row.sample] = Some(finish(row));
            }
        }
        Ok(())
    }

    /// Rebuilds the batch: the rows still decoding, then the waiting requests that fit
    /// the budget (prefilled, forked for their samples, their first tokens drawn), in
    /// one cache as wide as the longest row needs now. Returns the rows, their cache
    /// and (in [`KvMode::Shared`]) the positions it holds.
    #[allow(clippy::too_many_arguments)]
    fn regroup(
        &mut self,
        batch: &[ExpandRequest<'_>],
        rows: Vec<Row>,
        cache: Cache,
        capacity: usize,
        waiting: &mut VecDeque<&Live>,
        samples: &mut [Vec<Option<Generated>>],
        stats: &mut Stats,
    ) -> Result<(Vec<Row>, Cache, usize), ModelError> {
        let mode = self.model.kv_mode();
        let shared = mode == KvMode::Shared;
        let route = self.model.route();
        let old_width = if shared {
            capacity
        } else {
            rows.first().map_or(0, |r| r.slots.len())
        };
        let old = rows.len() * old_width;
        let kept: Vec<(usize, Row)> = rows
            .into_iter()
            .enumerate()
            .filter(|(_, r)| !r.step.done)
            .collect();
        let mut width = kept
            .iter()
            .map(|(_, r)| needed(route, r))
            .max()
            .unwrap_or(0);
        let mut ahead = kept.iter().map(|(_, r)| left(r)).max().unwrap_or(0);
        let mut count = kept.len();
        let mut prompts = 0;
        let mut admitted: Vec<&Live> = Vec::new();
        // The torch route cannot trim the padding between a row's positions, so its
        // width only grows while rows stay: it admits only into an empty batch.
        let admit = route == Route::Genai || kept.is_empty();
        while let Some(&next) = waiting.front().filter(|_| admit) {
            let (request, prompt, budget) = next;
            let len = self.model.embedded_len(prompt);
            let n = batch[*request].seeds.len();
            let w = width.max(len);
            let a = ahead.max(*budget);
            let cost = self.budget.regroup_cost(
                shared,
                old,
                prompts + len,
                count + n,
                buffer(shared, w, a),
            );
            if cost > self.budget.limit && (count > 0 || !admitted.is_empty()) {
                break;
            }
            (width, ahead, count, prompts) = (w, a, count + n, prompts + len);
            admitted.push(next);
            waiting.pop_front();
        }
        // What a failure from here on had in hand (see `decode_fitting`).
        let requests: HashSet<usize> = kept.iter().map(|(_, r)| r.request).collect();
        stats.requests = requests.len() + admitted.len();
        stats.cost =
            self.budget
                .regroup_cost(shared, old, prompts, count, buffer(shared, width, ahead));

        // The waiting requests admitted: prefilled in chunks, one cache source each.
        let mut sources: Vec<Cache> = Vec::new();
        let mut picks: Vec<(usize, usize)> = Vec::new();
        let mut fresh: Vec<Row> = Vec::new();
        let base = usize::from(!kept.is_empty());
        for chunk in admitted.chunks(PREFILL_BATCH) {
            let refs: Vec<&Prompt> = chunk.iter().map(|(_, p, _)| p).collect();
            let (lens, run) = self.model.prefill_last(&refs)?;
            // The worker's `tsst_actors::metrics::TOKENS_PREFILLED` (this crate does
            // not depend on the actors'): prompt positions this policy prefilled.
            metrics::counter!("tsst_tokens_prefilled_total")
                .increment(lens.iter().sum::<usize>() as u64);
            let seq = lens.iter().copied().max().unwrap_or(0);
            let source = base + sources.len();
            sources.push(run.presents);
            for (b, (request, _, budget)) in chunk.iter().enumerate() {
                let req = &batch[*request];
                let slots: Vec<i64> = (0..seq).map(|t| i64::from(t < lens[b])).collect();
                for (sample, &seed) in req.seeds.iter().enumerate() {
                    let mut row = Row {
                        request: *request,
                        sample,
                        rng: Rng::new(seed),
                        step: Step::default(),
                        slots: slots.clone(),
                        valid: lens[b],
                        budget: *budget,
                    };
                    self.advance(&mut row, &run.picked[b], req)?;
                    if row.step.done {
                        samples[row.request][row.sample] = Some(finish(&row));
                    } else {
                        fresh.push(row);
                        picks.push((source, b));
                    }
                }
            }
        }
        let mut rows: Vec<Row> = Vec::with_capacity(kept.len() + fresh.len());
        let mut all_picks: Vec<(usize, usize)> = Vec::with_capacity(rows.capacity());
        for (at, row) in kept {
            all_picks.push((0, at));
            rows.push(row);
        }
        all_picks.extend(picks);
        rows.extend(fresh);
        if rows.is_empty() {
            return Ok((rows, Vec::new(), 0));
        }
        let width = rows.iter().map(|r| needed(route, r)).max().unwrap_or(0);
        let ahead = rows.iter().map(left).max().unwrap_or(0);
        for row in &mut rows {
            row.slots.resize(width, 0);
        }
        let capacity = buffer(shared, width, ahead);
        let positions = if shared { capacity } else { width };
        let mut all: Vec<Cache> = Vec::with_capacity(base + sources.len());
        if base == 1 {
            all.push(cache);
        }
        all.extend(sources);
        // One sample per prompt, all alive, on the host: the prefill's caches serve as
        // they are.
        let identity = !shared
            && all.len() == 1
            && all_picks.iter().enumerate().all(|(r, &p)| p == (0, r))
            && all[0]
                .first()
                .and_then(|(k, _)| tensor::shape(k).ok())
                .is_some_and(|s| s == [rows.len() as i64, s[1], width as i64, s[3]]);
        let cache = if identity {
            all.swap_remove(0)
        } else {
            self.model.regather(all, &all_picks, positions)?
        };
        Ok((rows, cache, capacity))
    }

    /// Draws the row's next token from `logits` and updates its step.
    fn advance(
        &self,
        row: &mut Row,
        logits: &[f32],
        req: &ExpandRequest<'_>,
    ) -> Result<(), ModelError> {
        let choice = choose(logits, req.temperature, &mut row.rng);
        self.push(row, choice, req)
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

/// Whether to drop finished rows from the batch now. On the host the cache is
/// rebuilt anyway; on the device a gather copies the whole cache, while a finished
/// row left in the batch costs one more row of each step: compact once a quarter of
/// the rows are done.
fn compact_now(mode: KvMode, finished: usize, rows: usize) -> bool {
    match mode {
        KvMode::Host => finished > 0,
        KvMode::Bound | KvMode::Shared => finished * 4 >= rows,
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

/// Positions of a row's cache that hold entries it still needs: on the genai route
/// its real positions (they come first); on the torch route padding sits between
/// them, so the whole mask.
fn needed(route: Route, row: &Row) -> usize {
    match route {
        Route::Genai => row.valid,
        Route::Torch => row.slots.len(),
    }
}

/// Tokens a row may still generate.
fn left(row: &Row) -> usize {
    row.budget.saturating_sub(row.step.ids.len())
}

/// Positions each row's cache holds after a regroup to `width`: in a shared buffer
/// room for the next [`HEADROOM`] steps (or what the longest row has left); a cache
/// that grows each step holds its width.
fn buffer(shared: bool, width: usize, ahead: usize) -> usize {
    if shared {
        width + ahead.clamp(1, HEADROOM)
    } else {
        width
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
