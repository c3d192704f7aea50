//! Continuous batching over caches that grow by a position each step (the host and
//! bound modes): the batch regroups as rows finish, into one cache as wide as its
//! rows need, and admits waiting requests as far as the cache budget allows.
use super::*;

impl OnnxPolicy {
    /// Decodes the requests with continuous batching over caches that grow each step
    /// (host and bound modes): whenever a quarter of the rows have finished (on the
    /// host: any) the batch regroups, dropping finished rows and admitting waiting
    /// requests as far as the cache budget allows, so it does not drain to its slowest
    /// row while requests wait.
    pub(super) fn decode_regrouping(
        &mut self,
        batch: &[ExpandRequest<'_>],
        live: &[Live],
        out: &mut [Option<GeneratedOutput>],
        stats: &mut Stats,
    ) -> Result<(), ModelError> {
        let mode = self.model.kv_mode();
        let mut samples: Vec<Vec<Option<Generated>>> =
            batch.iter().map(|r| vec![None; r.seeds.len()]).collect();
        let mut waiting: VecDeque<&Live> = live.iter().collect();
        let mut rows: Vec<Row> = Vec::new();
        let mut cache: Cache = Vec::new();
        loop {
            let finished = rows.iter().filter(|r| r.step.done).count();
            let alive = rows.len() - finished;
            if alive == 0 || (finished > 0 && compact_now(mode, finished, rows.len())) {
                if alive == 0 && waiting.is_empty() {
                    break;
                }
                (rows, cache) = self.regroup(
                    batch,
                    std::mem::take(&mut rows),
                    std::mem::take(&mut cache),
                    &mut waiting,
                    &mut samples,
                    stats,
                )?;
                stats.admissions += 1;
                stats.most_rows = stats.most_rows.max(rows.len());
                settle(live, &mut samples, out);
                if rows.is_empty() {
                    continue;
                }
            }
            self.step(batch, &mut rows, &mut cache, &mut samples)?;
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
        samples: &mut [Vec<Option<Generated>>],
    ) -> Result<(), ModelError> {
        let len = rows[0].slots.len();
        let ids: Vec<i64> = rows
            .iter()
            .map(|r| r.step.ids.last().copied().unwrap_or_default())
            .collect();
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
            Embeds::Ids(ids),
            mask,
            positions,
            std::mem::take(cache),
            false,
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
    /// one cache as wide as the longest row needs now.
    #[allow(clippy::too_many_arguments)]
    fn regroup(
        &mut self,
        batch: &[ExpandRequest<'_>],
        rows: Vec<Row>,
        cache: Cache,
        waiting: &mut VecDeque<&Live>,
        samples: &mut [Vec<Option<Generated>>],
        stats: &mut Stats,
    ) -> Result<(Vec<Row>, Cache), ModelError> {
        let route = self.model.route();
        let old = rows.len() * rows.first().map_or(0, |r| r.slots.len());
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
        let mut count = kept.len();
        let mut prompts = 0;
        let mut admitted: Vec<&Live> = Vec::new();
        // The torch route cannot trim the padding between a row's positions, so its
        // width only grows while rows stay: it admits only into an empty batch.
        let admit = route == Route::Genai || kept.is_empty();
        while let Some(&next) = waiting.front().filter(|_| admit) {
            let (request, prompt, _) = next;
            let len = self.model.embedded_len(prompt);
            let n = batch[*request].seeds.len();
            let w = width.max(len);
            let cost = self.budget.regroup_cost(old, prompts + len, count + n, w);
            if cost > self.budget.limit && (count > 0 || !admitted.is_empty()) {
                break;
            }
            (width, count, prompts) = (w, count + n, prompts + len);
            admitted.push(next);
            waiting.pop_front();
        }
        // What a failure from here on had in hand (see `decode_fitting`).
        let requests: HashSet<usize> = kept.iter().map(|(_, r)| r.request).collect();
        stats.requests = requests.len() + admitted.len();
        stats.cost = self.budget.regroup_cost(old, prompts, count, width);

        // The waiting requests admitted: prefilled in chunks, one cache source each.
        let mut sources: Vec<Cache> = Vec::new();
        let mut picks: Vec<(usize, usize)> = Vec::new();
        let mut fresh: Vec<Row> = Vec::new();
        let base = usize::from(!kept.is_empty());
        for chunk in admitted.chunks(PREFILL_BATCH) {
            let (presents, running) = self.start(batch, chunk, samples)?;
            let source = base + sources.len();
            sources.push(presents);
            for (row, b) in running {
                fresh.push(row);
                picks.push((source, b));
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
            return Ok((rows, Vec::new()));
        }
        let width = rows.iter().map(|r| needed(route, r)).max().unwrap_or(0);
        for row in &mut rows {
            row.slots.resize(width, 0);
        }
        let mut all: Vec<Cache> = Vec::with_capacity(base + sources.len());
        if base == 1 {
            all.push(cache);
        }
        all.extend(sources);
        // One sample per prompt, all alive, on the host: the prefill's caches serve as
        // they are.
        let identity = all.len() == 1
            && all_picks.iter().enumerate().all(|(r, &p)| p == (0, r))
            && all[0]
                .first()
                .and_then(|(k, _)| tensor::shape(k).ok())
                .is_some_and(|s| s == [rows.len() as i64, s[1], width as i64, s[3]]);
        let cache = if identity {
            all.swap_remove(0)
        } else {
            self.model.regather(all, &all_picks, width)?
        };
        Ok((rows, cache))
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

/// Positions of a row's cache that hold entries it still needs: on the genai route
/// its real positions (they come first); on the torch route padding sits between
/// them, so the whole mask.
fn needed(route: Route, row: &Row) -> usize {
    match route {
        Route::Genai => row.valid,
        Route::Torch => row.slots.len(),
    }
}
