//! Scoring in row slots, one position a run (`TSST_VALUE_RESTS=steps`, `KvMode::Shared`).
//!
//! The default scores a node's children from one prefill of their shared prefix and
//! then runs each child's rest (its last step, ~20 tokens) as one decoder run of
//! several positions over that prefix, one child a run. On an H100 at the 7B shape
//! that cost ~45 ms a child where reading the weights once takes 4.3 ms
//! (bench/RESULTS.md). Here the rests are teacher-forced instead, one position a
//! run for many rows together, which is the decode step the policy runs: a fixed set
//! of row slots (one buffer per cache tensor, `[slots, kv_heads, capacity,
//! head_dim]`); a group of texts (a node's children) is admitted when its members fit
//! the free slots, its prefix prefilled and gathered into each member's slot; each
//! step feeds every row its next token; a row whose text is complete hands over its
//! hidden state and frees its slot for the next group.
use super::*;
use crate::llava::{slot_step_inputs, take_fitting, SlotPool};
use crate::memory::KvBudget;
use std::collections::VecDeque;

/// Prefixes prefilled per decoder run.
const PREFILL_BATCH: usize = 8;

/// `steps` scores texts in row slots ([`OnnxValue::score_slots`]).
pub const RESTS_ENV: &str = "TSST_VALUE_RESTS";

/// Texts that begin with the same `shared` ids: scored from one prefill of those.
struct Group {
    members: Vec<usize>,
    shared: usize,
}

/// A text in a slot: its index in `live`, the ids still to feed, where it is.
struct Row {
    text: usize,
    next: usize,
    /// Real positions in the slot: where the next id goes.
    valid: usize,
}

impl OnnxValue {
    /// The value model's slot budget: a share of the device memory free at load
    /// (half the policy's share: the two models share the device), or
    /// `TSST_KV_BUDGET_MB`.
    pub(super) fn slot_budget(model: &Llava, device: crate::device::Device) -> KvBudget {
        let mut budget =
            KvBudget::for_decoder(&model.manifest.decoder, model.manifest.dtype, device);
        if std::env::var(crate::memory::BUDGET_ENV).is_err() {
            budget.limit /= 2;
        }
        budget
    }

    /// The last hidden state of each text of `live` (in its order), scored in row
    /// slots.
    pub(super) fn score_slots(
        &mut self,
        live: &[(usize, Prompt)],
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let embedded = |p: &Prompt| self.model.embedded_len(p);
        let longest = live.iter().map(|(_, p)| embedded(p) + 1).max().unwrap_or(1);
        let capacity = self.model.slot_capacity(longest);
        // A group larger than the budget's slots is scored in parts.
        let fit = self.budget.slots(capacity, 1);
        let groups = self.slot_groups(live, fit);
        let least = groups.iter().map(|g| g.members.len()).max().unwrap_or(1);
        let mut pool = self.slot_pool(capacity, least, live.len())?;
        let result = self.run_slots(live, &groups, &mut pool);
        if result.is_ok() {
            self.pool = Some(pool);
        }
        result
    }

    /// Consecutive texts that share a prefix ([`OnnxValue::shared_prefixes`]), in
    /// parts of at most `most`; every other text alone, its prefix all but its last
    /// id.
    fn slot_groups(&self, live: &[(usize, Prompt)], most: usize) -> Vec<Group> {
        let runs = self.shared_prefixes(live);
        let mut groups = Vec::new();
        let mut at = 0;
        for run in runs.into_iter().chain(std::iter::once(Shared {
            members: live.len()..live.len(),
            shared: 0,
        })) {
            for (t, (_, p)) in live.iter().enumerate().take(run.members.start).skip(at) {
                groups.push(Group {
                    members: vec![t],
                    shared: p.ids.len() - 1,
                });
            }
            if !run.members.is_empty() {
                at = run.members.end;
                let members: Vec<usize> = run.members.collect();
                for part in members.chunks(most.max(1)) {
                    groups.push(Group {
                        members: part.to_vec(),
                        shared: run.shared,
                    });
                }
            }
        }
        groups
    }

    /// Row slots of at least `capacity` positions and `least` slots: the last call's
    /// while they are large enough, else as many as the budget holds (no more than
    /// the call's `rows`).
    fn slot_pool(
        &mut self,
        capacity: usize,
        least: usize,
        rows: usize,
    ) -> Result<SlotPool, ModelError> {
        let slots = self.budget.slots(capacity, least).min(rows.max(least));
        let (pool, new) = self
            .model
            .slot_pool(self.pool.take(), capacity, least, slots)?;
        if new {
            tracing::debug!(slots, capacity, "allocating the value model's row slots");
        }
        Ok(pool)
    }

    fn run_slots(
        &mut self,
        live: &[(usize, Prompt)],
        groups: &[Group],
        pool: &mut SlotPool,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let pad = self.model.manifest.special_tokens.pad;
        let mut last: Vec<Option<Vec<f32>>> = vec![None; live.len()];
        let mut rows: Vec<Option<Row>> = (0..pool.slots).map(|_| None).collect();
        let mut waiting: VecDeque<&Group> = groups.iter().collect();
        loop {
            let t = std::time::Instant::now();
            self.admit_groups(live, &mut waiting, &mut rows, pool)?;
            self.phases.prefix += ms_since(t);
            if rows.iter().all(Option::is_none) {
                if waiting.is_empty() {
                    break;
                }
                continue;
            }
            let t = std::time::Instant::now();
            self.step_slots(live, &mut rows, pool, pad, &mut last)?;
            self.phases.steps += 1;
            self.phases.runs += ms_since(t);
        }
        last.into_iter()
            .map(|h| h.ok_or_else(|| ModelError::run(&self.model.label(), "a text was not scored")))
            .collect()
    }

    /// Admits waiting groups while their members fit the free slots: prefills their
    /// prefixes together and gathers each into its members' slots.
    fn admit_groups(
        &mut self,
        live: &[(usize, Prompt)],
        waiting: &mut VecDeque<&Group>,
        rows: &mut [Option<Row>],
        pool: &mut SlotPool,
    ) -> Result<(), ModelError> {
        loop {
            let free = rows.iter().filter(|r| r.is_none()).count();
            let chunk = take_fitting(waiting, free, PREFILL_BATCH, |g: &Group| g.members.len());
            if chunk.is_empty() {
                return Ok(());
            }
            self.phases.admissions += 1;
            let prefixes: Vec<Prompt> = chunk
                .iter()
                .map(|g| {
                    let first = &live[g.members[0]].1;
                    Prompt {
                        ids: first.ids[..g.shared].to_vec(),
                        features: first.features.clone(),
                        stem: 0,
                    }
                })
                .collect();
            let (lens, run) = self
                .model
                .prefill_last(&prefixes.iter().collect::<Vec<_>>())?;
            self.model.count_prefilled(lens.iter().sum());
            let open: Vec<usize> = (0..rows.len()).filter(|&s| rows[s].is_none()).collect();
            let mut placed: Vec<(usize, usize)> = Vec::new();
            let mut open = open.into_iter();
            for (b, g) in chunk.iter().enumerate() {
                for &text in &g.members {
                    let slot = open.next().expect("admission counted the free slots");
                    rows[slot] = Some(Row {
                        text,
                        next: g.shared,
                        valid: lens[b],
                    });
                    placed.push((slot, b));
                }
            }
            self.model
                .gather_into_slots(run.presents, &placed, &mut pool.cache)?;
        }
    }

    /// One decoder run over every slot: each row's next id; a row whose text is
    /// complete gives its hidden state to `last` and frees its slot.
    fn step_slots(
        &mut self,
        live: &[(usize, Prompt)],
        rows: &mut [Option<Row>],
        pool: &mut SlotPool,
        pad: i64,
        last: &mut [Option<Vec<f32>>],
    ) -> Result<(), ModelError> {
        let n = rows.len();
        let active = rows.iter().flatten().count();
        let mut done: Vec<(usize, usize)> = Vec::new();
        let mut inputs: Vec<Option<(i64, usize)>> = Vec::with_capacity(n);
        for (s, row) in rows.iter().enumerate() {
            inputs.push(row.as_ref().map(|r| {
                let text = &live[r.text].1.ids;
                if r.next + 1 == text.len() {
                    done.push((s, 0));
                }
                (text[r.next], r.valid)
            }));
        }
        let (ids, mask, positions) = slot_step_inputs(&inputs, pad);
        // A run brings back at least one row.
        let picks: &[(usize, usize)] = if done.is_empty() { &[(0, 0)] } else { &done };
        let embeds = self.model.embed_step(ids)?;
        let mut run = self.model.decode(
            n,
            Embeds::Value(embeds),
            mask,
            positions,
            std::mem::take(&mut pool.cache),
            true,
            Want::Rows(picks),
        )?;
        pool.cache = run.presents;
        let mut picked = run.picked.drain(..);
        for (s, _) in &done {
            if let (Some(row), Some(h)) = (rows[*s].take(), picked.next()) {
                last[row.text] = Some(h);
            }
        }
        for row in rows.iter_mut().flatten() {
            row.next += 1;
            row.valid += 1;
        }
        self.model.count_prefilled(active);
        Ok(())
    }
}
