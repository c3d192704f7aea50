//! Continuous batching over row slots in shared device buffers (`KvMode::Shared`).
//!
//! The batch is a fixed set of slots: per cache tensor one buffer `[slots, kv_heads,
//! capacity, head_dim]`, bound as both past and present, so GroupQueryAttention writes
//! only each step's new position. A request is admitted when enough slots are free
//! for its samples: its prompt is prefilled (several together) and its cache
//! gathered straight into its free slots; a finished row frees its slot at once. No
//! step copies the cache, and nothing is compacted: a free slot runs along with a
//! one-position mask (a few kernels' worth of rows, where the weights are read once
//! for all) until a row takes it.
use super::*;
use crate::llava::{slot_step_inputs, take_fitting, SlotPool};
use crate::ms_since;
use std::time::Instant;

/// Fewer shared ids than this are not worth a second run.
const MIN_SHARED: usize = 16;

impl OnnxPolicy {
    pub(super) fn decode_slots(
        &mut self,
        batch: &[ExpandRequest<'_>],
        live: &[Live],
        out: &mut [Option<GeneratedOutput>],
        stats: &mut Stats,
    ) -> Result<(), ModelError> {
        // Every row's positions fit its slot: the longest prompt plus its step budget,
        // and the position a last step writes.
        let capacity = live
            .iter()
            .map(|(_, p, budget)| self.model.embedded_len(p) + budget + 1)
            .max()
            .unwrap_or(1);
        let least = live
            .iter()
            .map(|(i, _, _)| batch[*i].seeds.len())
            .max()
            .unwrap_or(1);
        let total: usize = live.iter().map(|(i, _, _)| batch[*i].seeds.len()).sum();
        stats.requests = live.len();
        let mut pool = self.pool(capacity, least, total, stats)?;
        stats.most_rows = pool.slots;
        let result = self.run_slots(batch, live, out, &mut pool, stats);
        // The buffers stay for the next batch unless the device ran out of memory; then
        // no graph may keep them either.
        if result.is_ok() {
            self.pool = Some(pool);
        } else {
            self.kept.clear();
            self.model.retire_graph();
        }
        result
    }

    /// Admits and decodes until every request of `live` has its samples.
    fn run_slots(
        &mut self,
        batch: &[ExpandRequest<'_>],
        live: &[Live],
        out: &mut [Option<GeneratedOutput>],
        pool: &mut SlotPool,
        stats: &mut Stats,
    ) -> Result<(), ModelError> {
        // A free slot is fed the begin-of-sequence token at position 0, where every
        // prompt has it: a finished row's cache stays whole for prefix reuse.
        let idle = match self.slot_reuse {
            true => self.model.manifest.special_tokens.bos,
            false => self.model.manifest.special_tokens.pad,
        };
        let mut rows: Vec<Option<Row>> = (0..pool.slots).map(|_| None).collect();
        let mut samples: Vec<Vec<Option<Generated>>> =
            batch.iter().map(|r| vec![None; r.seeds.len()]).collect();
        let mut waiting: VecDeque<&Live> = live.iter().collect();
        loop {
            let t = Instant::now();
            self.admit(batch, &mut waiting, &mut rows, pool, &mut samples, stats)?;
            stats.admit_ms += ms_since(t);
            settle(live, &mut samples, out);
            if rows.iter().all(Option::is_none) {
                if waiting.is_empty() {
                    return Ok(());
                }
                continue;
            }
            let t = Instant::now();
            self.slot_step(batch, &mut rows, pool, idle, &mut samples)?;
            stats.steps_ms += ms_since(t);
            stats.steps += 1;
            settle(live, &mut samples, out);
        }
    }

    /// A pool with at least `capacity` positions a slot and `least` slots. The last
    /// batch's serves while it is that large (however many slots it has: the first
    /// batch of a search is its largest); otherwise it is dropped and one allocated
    /// with as many slots as the budget holds (no more than the batch's `rows`), its
    /// capacity rounded up (`Llava::slot_capacity`).
    fn pool(
        &mut self,
        capacity: usize,
        least: usize,
        rows: usize,
        stats: &mut Stats,
    ) -> Result<SlotPool, ModelError> {
        let capacity = self.model.slot_capacity(capacity);
        let slots = self.budget.slots(capacity, least).min(rows.max(least));
        let (pool, new) = self
            .model
            .slot_pool(self.pool.take(), capacity, least, slots)?;
        if new || self.kept.len() != pool.slots {
            self.kept = vec![None; pool.slots];
        }
        stats.cost = (pool.slots * pool.capacity) as u64 * self.budget.per_position;
        if new {
            tracing::debug!(
                slots,
                capacity,
                mib = stats.cost >> 20,
                "allocating the row slots"
            );
        }
        Ok(pool)
    }

    /// Admits waiting requests while their samples fit the free slots: prefills their
    /// prompts (up to [`PREFILL_BATCH`] together), draws each sample's first token and
    /// gathers each still-running sample's cache into a free slot.
    fn admit(
        &mut self,
        batch: &[ExpandRequest<'_>],
        waiting: &mut VecDeque<&Live>,
        rows: &mut [Option<Row>],
        pool: &mut SlotPool,
        samples: &mut [Vec<Option<Generated>>],
        stats: &mut Stats,
    ) -> Result<(), ModelError> {
        loop {
            let free = rows.iter().filter(|r| r.is_none()).count();
            let chunk = take_fitting(waiting, free, PREFILL_BATCH, |l: &Live| {
                batch[l.0].seeds.len()
            });
            if chunk.is_empty() {
                return Ok(());
            }
            stats.admissions += 1;
            if self.model.stems_on() {
                // One prompt a run over its question's stem.
                for live in chunk {
                    let (presents, running) = match self.model.prefill_over_stem(&live.1, 0)? {
                        Some((len, run)) => {
                            let rows =
                                self.begin(batch, live, &run.picked[0], len, Vec::new(), samples)?;
                            (run.presents, rows.into_iter().map(|r| (r, 0)).collect())
                        }
                        None => self.start(batch, &[live], samples)?,
                    };
                    self.place(presents, running, rows, pool)?;
                }
            } else if self.slot_reuse {
                // One prompt a run, over what it shares with a slot.
                for live in chunk {
                    self.admit_over_slot(batch, live, rows, pool, samples, stats)?;
                }
            } else {
                let (presents, running) = self.start(batch, &chunk, samples)?;
                self.place(presents, running, rows, pool)?;
            }
        }
    }

    /// Admits one request: where a slot holds the cache of its prompt's first ids
    /// (a row of its question running there, or one that finished there), those
    /// positions are copied from the slot with the most of them, and only the rest
    /// of its prompt is prefilled over them, in place; otherwise its prompt is
    /// prefilled whole.
    fn admit_over_slot(
        &mut self,
        batch: &[ExpandRequest<'_>],
        live: &Live,
        rows: &mut [Option<Row>],
        pool: &mut SlotPool,
        samples: &mut [Vec<Option<Generated>>],
        stats: &mut Stats,
    ) -> Result<(), ModelError> {
        let prompt = &live.1;
        let (presents, running) = match self.shared_slot(rows, prompt) {
            Some((slot, ids)) => {
                let past = self.model.positions_of(&prompt.ids[..ids]);
                // The whole slot row: past the shared positions, the rest is written
                // over.
                let buffer = self.model.gather(
                    std::slice::from_ref(&pool.cache),
                    &[(0, slot)],
                    pool.capacity,
                )?;
                let (len, run) = self.model.continue_prompt(prompt, ids, past, buffer)?;
                stats.prefixes_copied += 1;
                let begun = self.begin(batch, live, &run.picked[0], len, Vec::new(), samples)?;
                (run.presents, begun.into_iter().map(|r| (r, 0)).collect())
            }
            None => self.start(batch, &[live], samples)?,
        };
        let opening = Opening::of(&self.model, prompt);
        let running = running
            .into_iter()
            .map(|(mut row, b): (Row, usize)| {
                row.opening = Some(opening.clone());
                (row, b)
            })
            .collect();
        self.place(presents, running, rows, pool)
    }

    /// The slot holding the most of `prompt`'s first ids, and how many: at least
    /// [`MIN_SHARED`] and past every image token (the rest is prefilled as text).
    /// Free slots are fed the begin-of-sequence token (`slot_step`), so a finished
    /// row's first position stays what every prompt's is.
    fn shared_slot(&self, rows: &[Option<Row>], prompt: &Prompt) -> Option<(usize, usize)> {
        let special = &self.model.manifest.special_tokens;
        if prompt.ids.first() != Some(&special.bos) {
            return None;
        }
        let held = rows
            .iter()
            .zip(&self.kept)
            .enumerate()
            .filter_map(|(s, (row, kept))| {
                let n = match (row, kept) {
                    (Some(row), _) => {
                        let o = row.opening.as_ref()?;
                        o.shared_with(o.fed(row), prompt)
                    }
                    (None, Some((_, o))) => o.shared_with(&[], prompt),
                    (None, None) => return None,
                };
                Some((s, n))
            });
        let (slot, ids) = held.max_by_key(|&(_, n)| n)?;
        let image = special.image;
        (ids >= MIN_SHARED && !prompt.ids[ids..].contains(&image)).then_some((slot, ids))
    }

    /// Puts rows still running after their first token each into a free slot (its
    /// mask follows from `valid`), their caches gathered there from row `b` of
    /// `presents`. Free slots that hold nothing go first, then those whose rows
    /// finished longest ago.
    fn place(
        &mut self,
        presents: Cache,
        running: Vec<(Row, usize)>,
        rows: &mut [Option<Row>],
        pool: &mut SlotPool,
    ) -> Result<(), ModelError> {
        let mut open: Vec<usize> = (0..rows.len()).filter(|&s| rows[s].is_none()).collect();
        // Admission counted every sample against the free slots.
        assert!(running.len() <= open.len(), "more rows than free slots");
        open.sort_by_key(|&s| self.kept[s].as_ref().map(|(at, _)| at + 1));
        open.truncate(running.len());
        open.sort_unstable();
        let mut placed: Vec<(usize, usize)> = Vec::with_capacity(running.len());
        for ((mut row, b), slot) in running.into_iter().zip(open) {
            row.slots = Vec::new();
            rows[slot] = Some(row);
            self.kept[slot] = None;
            placed.push((slot, b));
        }
        self.model
            .gather_into_slots(presents, &placed, &mut pool.cache)?;
        Ok(())
    }

    /// One decoder run over every slot: the next token of each running row; a free
    /// slot decodes `idle` at position 0 over a one-position mask and is ignored.
    fn slot_step(
        &mut self,
        batch: &[ExpandRequest<'_>],
        rows: &mut [Option<Row>],
        pool: &mut SlotPool,
        idle: i64,
        samples: &mut [Vec<Option<Generated>>],
    ) -> Result<(), ModelError> {
        let n = rows.len();
        let inputs: Vec<Option<(i64, usize)>> = rows
            .iter()
            .map(|r| {
                r.as_ref()
                    .map(|r| (r.step.ids.last().copied().unwrap_or(idle), r.valid))
            })
            .collect();
        let (ids, mask, positions) = slot_step_inputs(&inputs, idle);
        let (mut temperature, mut uniform) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for row in rows.iter_mut() {
            let t = row.as_ref().map_or(0.0, |r| batch[r.request].temperature);
            temperature.push(t as f32);
            uniform.push(match row {
                Some(r) if t > 0.0 => r.rng.next_f64() as f32,
                _ => 0.0,
            });
        }
        let run = self.model.decode(
            n,
            Embeds::Ids(ids),
            mask,
            positions,
            std::mem::take(&mut pool.cache),
            true,
            Want::Sample {
                temperature: &temperature,
                uniform: &uniform,
            },
        )?;
        pool.cache = run.presents;
        for (s, slot) in rows.iter_mut().enumerate() {
            let Some(row) = slot.as_mut() else { continue };
            row.valid += 1;
            let req = &batch[row.request];
            self.push(row, run.choices[s], req)?;
            if row.step.done {
                samples[row.request][row.sample] = Some(finish(row));
                if let Some(o) = &row.opening {
                    self.finished += 1;
                    self.kept[s] = Some((self.finished, o.left_by(row)));
                }
                *slot = None;
            }
        }
        Ok(())
    }
}
