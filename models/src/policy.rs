//! The policy: continues partial solutions by one reasoning step.
//!
//! Per batch: every request's prompt is prefilled once (all prompts together,
//! right-padded), its cache is forked for the request's samples, and all samples of
//! all requests decode together, one token per decoder run, until each ends at its
//! step delimiter, end-of-sequence or token limit. Finished rows leave the batch.
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
//! outputs ignored) until a quarter of the batch is done, then the cache is compacted.
use crate::device::Device;
use crate::error::ModelError;
use crate::llava::{Cache, Embeds, KvMode, Llava, Prompt, Want};
use crate::manifest::{Kind, Route};
use crate::memory::{self, KvBudget};
use crate::sampling::{choose, Choice, Rng};
use crate::stop::Step;
use crate::tensor;
use std::path::Path;
use tsst_backend::{
    BackendError, ExpandRequest, PolicyBackend, PolicyOutput, RequestError, StepSample,
};

/// Prompts prefilled per decoder run; bounds the memory of a prefill's logits
/// (`prompts * length * vocab`).
const PREFILL_BATCH: usize = 8;

pub struct OnnxPolicy {
    model: Llava,
    budget: KvBudget,
}

/// A request that decodes: its index in the batch, its prompt, its step budget.
type Live = (usize, Prompt, usize);

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

        // As many requests together as their caches fit in the budget.
        let shapes = self.shapes(batch, &live);
        let groups = self.budget.groups(&shapes);
        if groups.len() > 1 {
            tracing::debug!(
                groups = groups.len(),
                requests = live.len(),
                "batch decoded in parts to fit the cache budget"
            );
        }
        for group in groups {
            self.decode_fitting(batch, &live[group], &mut out)?;
        }
        Ok(out
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(RequestError("not generated".into()))))
            .collect())
    }

    /// `(prompt positions, step budget, samples)` of each live request.
    fn shapes(&self, batch: &[ExpandRequest<'_>], live: &[Live]) -> Vec<(usize, usize, usize)> {
        live.iter()
            .map(|(i, p, budget)| (self.model.embedded_len(p), *budget, batch[*i].seeds.len()))
            .collect()
    }

    /// Decodes `live` together; if the device runs out of memory all the same, in
    /// halves (and later batches get a smaller budget), so that no request fails for
    /// want of memory while it fits alone.
    fn decode_fitting(
        &mut self,
        batch: &[ExpandRequest<'_>],
        live: &[Live],
        out: &mut [Option<GeneratedOutput>],
    ) -> Result<(), ModelError> {
        match self.decode_together(batch, live, out) {
            Err(e) if live.len() > 1 && memory::is_out_of_memory(&e.to_string()) => {
                let cost = self.budget.cost(&self.shapes(batch, live));
                self.budget.limit = self.budget.limit.min(cost / 4 * 3);
                tracing::warn!(
                    requests = live.len(),
                    budget_mib = self.budget.limit >> 20,
                    error = %e,
                    "out of device memory; decoding the batch in halves"
                );
                let (a, b) = live.split_at(live.len() / 2);
                self.decode_fitting(batch, a, out)?;
                self.decode_fitting(batch, b, out)
            }
            result => result,
        }
    }

    /// Prefills the requests' prompts, forks each for its samples and decodes all
    /// rows together until every step has ended; writes each request's samples.
    fn decode_together(
        &mut self,
        batch: &[ExpandRequest<'_>],
        live: &[Live],
        out: &mut [Option<GeneratedOutput>],
    ) -> Result<(), ModelError> {
        let mode = self.model.kv_mode();
        let mut samples: Vec<Vec<Option<Generated>>> =
            batch.iter().map(|r| vec![None; r.seeds.len()]).collect();
        let mut rows: Vec<Row> = Vec::new();
        let mut sources: Vec<Cache> = Vec::new();
        let mut picks: Vec<(usize, usize)> = Vec::new();
        for chunk in live.chunks(PREFILL_BATCH) {
            let refs: Vec<&Prompt> = chunk.iter().map(|(_, p, _)| p).collect();
            let (lens, run) = self.model.prefill_last(&refs)?;
            // The worker's `tsst_actors::metrics::TOKENS_PREFILLED` (this crate does
            // not depend on the actors'): prompt positions this policy prefilled.
            metrics::counter!("tsst_tokens_prefilled_total")
                .increment(lens.iter().sum::<usize>() as u64);
            let seq = lens.iter().copied().max().unwrap_or(0);
            let last = run.picked;
            let source = sources.len();
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
                    self.advance(&mut row, &last[b], req)?;
                    if row.step.done {
                        samples[row.request][row.sample] = Some(finish(&row));
                    } else {
                        rows.push(row);
                        picks.push((source, b));
                    }
                }
            }
        }

        // One cache for all live rows: each prompt's cache repeated for its samples
        // (in KvMode::Shared widened to the longest mask any step reaches).
        let mut shared = false;
        let mut capacity = 0;
        let mut cache = if rows.is_empty() {
            Vec::new()
        } else {
            let len = rows.iter().map(|r| r.slots.len()).max().unwrap_or(0);
            for row in &mut rows {
                row.slots.resize(len, 0);
            }
            let identity = sources.len() == 1
                && picks.iter().enumerate().all(|(r, &p)| p == (0, r))
                && tensor::shape(&sources[0][0].0)
                    .is_ok_and(|s| s.first() == Some(&(picks.len() as i64)));
            if mode == KvMode::Shared {
                let steps = rows
                    .iter()
                    .map(|r| r.budget.saturating_sub(r.step.ids.len()))
                    .max()
                    .unwrap_or(0);
                capacity = len + steps.max(1);
                shared = true;
                self.model.gather(&sources, &picks, capacity)?
            } else if identity {
                // One sample per prompt, all alive: the prefill's caches serve as they are.
                sources.swap_remove(0)
            } else {
                self.model.gather(&sources, &picks, len)?
            }
        };
        drop(sources);

        while !rows.is_empty() {
            let len = rows[0].slots.len();
            if shared && len + 1 > capacity {
                return Err(ModelError::run(
                    &self.model.decoder_file(),
                    format!(
                        "a step's mask ({}) outgrew the shared cache ({capacity})",
                        len + 1
                    ),
                ));
            }
            let ids: Vec<i64> = rows
                .iter()
                .map(|r| r.step.ids.last().copied().unwrap_or_default())
                .collect();
            let embeds = self.model.embed_step(ids)?;
            let mut mask = Vec::with_capacity(rows.len() * (len + 1));
            let mut positions = Vec::with_capacity(rows.len());
            for row in &mut rows {
                let next = next_mask(self.model.route(), &row.slots, row.valid);
                mask.extend_from_slice(&next);
                row.slots = next;
                positions.push(row.valid as i64);
                row.valid += 1;
            }
            // On the device the next tokens are chosen there (one uniform draw per
            // sampled row from its generator, as `choose` draws it); on the host from
            // the logits.
            let at: Vec<(usize, usize)> = (0..rows.len()).map(|r| (r, 0)).collect();
            let (mut temperature, mut uniform) = (Vec::new(), Vec::new());
            let want = if mode.on_device() {
                for row in &mut rows {
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
                std::mem::take(&mut cache),
                shared,
                want,
            )?;
            cache = run.presents;
            let mut finished = 0;
            for (r, row) in rows.iter_mut().enumerate() {
                if row.step.done {
                    // Finished in an earlier step; kept in a device batch until it is
                    // compacted (see below).
                    finished += 1;
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
                    finished += 1;
                }
            }
            if finished == rows.len() {
                rows.clear();
            } else if finished > 0 && compact_now(mode, finished, rows.len()) {
                let picks: Vec<(usize, usize)> = rows
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| !r.step.done)
                    .map(|(i, _)| (0, i))
                    .collect();
                let width = if shared { capacity } else { len + 1 };
                cache = self.model.gather(&[cache], &picks, width)?;
                rows.retain(|r| !r.step.done);
            }
        }

        for (request, _, _) in live {
            let done: Option<Vec<Generated>> = samples[*request].drain(..).collect();
            out[*request] = Some(match done {
                Some(s) => Ok(s),
                None => Err(RequestError("a sample did not finish".into())),
            });
        }
        Ok(())
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
