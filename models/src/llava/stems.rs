//! Prompt stems kept on the device across calls: the KV cache of a question's fixed
//! opening (system prompt, image, question: about 680 of a 7B prompt's ~1,000
//! positions), so that every later prompt of that question prefills only what
//! follows it (the chain so far) over a copy of the stem's cache.
//!
//! A search expands each question's nodes round after round, and every prompt of a
//! question starts with the same stem; without this, each expansion and each scored
//! node computed the image's 576 positions again. Only in [`KvMode::Shared`]: the
//! continuation writes in place after the stem, one prompt per run
//! (GroupQueryAttention takes several new positions over a past for one sequence
//! only).
//!
//! Off unless [`STEMS_ENV`] gives the store its bytes: at the 7B shape on an 80 GB
//! card the policy's stems came out of its row slots, and the search was no faster
//! while the value model was its bottleneck (bench/RESULTS.md).
//!
//! The store is bounded by bytes. Questions come round in turn, so least recently
//! used eviction would miss every time once they outnumber the entries; instead a
//! full store replaces an entry only when it has gone unused for
//! [`IDLE_LOOKUPS`] lookups (its question finished or moved elsewhere), and
//! otherwise leaves the new stem out: the questions that have entries keep hitting.
use super::*;
use crate::device::GRAPHS_ENV;

/// Overrides the stem store's bytes (MiB) of every model the process loads; `0`
/// turns stems off.
pub const STEMS_ENV: &str = "TSST_STEM_CACHE_MB";

/// Stems shorter than this many ids are not worth a second run.
const MIN_STEM: usize = 16;

/// A stem cached within this many ids of a prompt's own serves it (the rest runs as
/// part of the continuation) instead of caching a second, slightly longer one.
const SLACK: usize = 8;

/// Lookups an entry must go unused before a new stem may replace it.
const IDLE_LOOKUPS: u64 = 2048;

struct Stem {
    ids: Vec<i64>,
    /// The image the stem embeds (the same features `Arc`), if any.
    image: Option<Arc<Vec<f32>>>,
    /// Positions the stem takes (its image expanded).
    positions: usize,
    /// `[1, kv_heads, positions, head_dim]` per layer, on the decoder's device.
    cache: Cache,
    bytes: u64,
    used: u64,
}

/// The stems kept and how they have served, for the log lines.
#[derive(Default)]
pub struct Stems {
    entries: Vec<Stem>,
    bytes: u64,
    limit: u64,
    lookups: u64,
    pub hits: u64,
    pub misses: u64,
}

impl Stems {
    fn find(&self, prompt: &Prompt) -> Option<usize> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.ids.len() + SLACK >= prompt.stem
                    && s.ids.len() < prompt.ids.len()
                    && prompt.ids.starts_with(&s.ids)
                    && same_image(&s.image, &prompt.features)
            })
            .max_by_key(|(_, s)| s.ids.len())
            .map(|(i, _)| i)
    }

    /// Keeps `stem` if it fits (see the module docs); gives it back otherwise.
    fn insert(&mut self, stem: Stem) -> Result<usize, Stem> {
        while self.bytes + stem.bytes > self.limit {
            let idle = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, s)| s.used + IDLE_LOOKUPS <= self.lookups)
                .min_by_key(|(_, s)| s.used)
                .map(|(i, _)| i);
            match idle {
                Some(i) => {
                    let old = self.entries.swap_remove(i);
                    self.bytes -= old.bytes;
                }
                None => return Err(stem),
            }
        }
        self.bytes += stem.bytes;
        self.entries.push(stem);
        Ok(self.entries.len() - 1)
    }

    pub fn entries(&self) -> usize {
        self.entries.len()
    }
}

impl Llava {
    /// Bytes of stems kept (0: none, the default; stems serve in [`KvMode::Shared`]
    /// only, and not with CUDA graphs: a stem lasts in the decoder's arena, where a
    /// live graph writes its intermediates, `graph`). [`STEMS_ENV`] overrides it.
    /// Returns the bytes set.
    pub fn set_stem_bytes(&mut self, bytes: u64) -> u64 {
        self.stems.limit = match std::env::var(STEMS_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            Some(mb) => mb << 20,
            None => bytes,
        };
        if self.stems.limit > 0 && self.graphs_on() {
            tracing::warn!(
                "question stems are off while the decode steps run as CUDA graphs \
                 ({GRAPHS_ENV}=0 turns the graphs off)"
            );
            self.stems.limit = 0;
        }
        self.drop_stems();
        self.stems.limit
    }

    /// Frees every stem (after the device ran out of memory, say).
    pub fn drop_stems(&mut self) {
        self.stems.entries.clear();
        self.stems.bytes = 0;
    }

    pub fn stems(&self) -> &Stems {
        &self.stems
    }

    /// Whether [`Llava::prefill_over_stem`] can serve a prompt with a stem.
    pub fn stems_on(&self) -> bool {
        self.kv_mode == KvMode::Shared && self.stems.limit > 0
    }

    /// Whether a stem can serve `prompt`: at least [`MIN_STEM`] ids, less than the
    /// whole prompt, and no image after it.
    fn stem_serves(&self, prompt: &Prompt) -> bool {
        let image = self.manifest.special_tokens.image;
        prompt.stem >= MIN_STEM
            && prompt.stem < prompt.ids.len()
            && !prompt.ids[prompt.stem..].contains(&image)
    }

    /// Prefills `prompt` over a copy of its stem's cache, prefilling and caching the
    /// stem first when absent. Returns the prompt's positions and the run: the last
    /// position's row, and as presents one row of `positions + extra` positions in
    /// which the prompt's are written (the rest free for a continuation in place).
    /// `None` where stems do not serve: off, a stem under [`MIN_STEM`] ids, or an image
    /// after the stem.
    pub fn prefill_over_stem(
        &mut self,
        prompt: &Prompt,
        extra: usize,
    ) -> Result<Option<(usize, DecoderOutput)>, ModelError> {
        if !self.stems_on() || !self.stem_serves(prompt) {
            return Ok(None);
        }
        self.stems.lookups += 1;
        let (stem, kept) = match self.stems.find(prompt) {
            Some(i) => {
                self.stems.hits += 1;
                let entry = &mut self.stems.entries[i];
                entry.used = self.stems.lookups;
                // Taken out while the gather reads it, put back below.
                let stem = Stem {
                    ids: entry.ids.clone(),
                    image: None,
                    positions: entry.positions,
                    cache: std::mem::take(&mut entry.cache),
                    bytes: 0,
                    used: 0,
                };
                (stem, Some(i))
            }
            None => {
                self.stems.misses += 1;
                let opening = Prompt {
                    ids: prompt.ids[..prompt.stem].to_vec(),
                    features: prompt.features.clone(),
                    stem: 0,
                };
                let (lens, run) = self.prefill_last(&[&opening])?;
                self.count_prefilled(lens[0]);
                let bytes = lens[0] as u64 * self.cache_bytes_per_position();
                (
                    Stem {
                        ids: opening.ids,
                        image: opening.features,
                        positions: lens[0],
                        cache: run.presents,
                        bytes,
                        used: self.stems.lookups,
                    },
                    None,
                )
            }
        };
        let mut stem = stem;
        let sources = [std::mem::take(&mut stem.cache)];
        let result = self.continue_stem(prompt, stem.ids.len(), stem.positions, &sources, extra);
        let [cache] = sources;
        stem.cache = cache;
        match kept {
            Some(i) => self.stems.entries[i].cache = stem.cache,
            None => {
                // A stem that does not fit is dropped after this one use.
                let _ = self.stems.insert(stem);
            }
        }
        match result {
            Ok(run) => Ok(Some(run)),
            Err(e) if crate::memory::is_out_of_memory(&e.to_string()) => Err(e),
            // A runtime that cannot continue a cache in place: whole prompts from now
            // on (once, loudly); a model that fails anyway fails there too.
            Err(e) => {
                tracing::warn!(model = %self.label(), error = %e, "prefilling over a question's stem failed; this model prefills whole prompts from now on");
                self.stems.limit = 0;
                self.drop_stems();
                Ok(None)
            }
        }
    }

    /// The prompt's positions after its first `ids` (cached in `stem`, `past`
    /// positions), run in place over a copy of that cache.
    fn continue_stem(
        &mut self,
        prompt: &Prompt,
        ids: usize,
        past: usize,
        stem: &[Cache; 1],
        extra: usize,
    ) -> Result<(usize, DecoderOutput), ModelError> {
        let new = prompt.ids.len() - ids;
        let buffer = self.gather(stem, &[(0, 0)], past + new + extra)?;
        self.continue_prompt(prompt, ids, past, buffer)
    }

    /// The prompt's positions after its first `ids`, run in place in `buffer` (one
    /// row holding those ids' `past` positions, and room for the rest). Returns the
    /// prompt's positions and the run.
    pub fn continue_prompt(
        &mut self,
        prompt: &Prompt,
        ids: usize,
        past: usize,
        buffer: Cache,
    ) -> Result<(usize, DecoderOutput), ModelError> {
        let rest = Prompt {
            ids: prompt.ids[ids..].to_vec(),
            features: None,
            stem: 0,
        };
        let new = rest.ids.len();
        let embeds = self.embed_prompts(&[&rest])?.remove(0);
        let run = self.continue_one(embeds, new, past, buffer, true)?;
        self.count_prefilled(new);
        Ok((past + new, run))
    }

    /// Bytes of cache one position of one row takes (all layers, keys and values).
    fn cache_bytes_per_position(&self) -> u64 {
        let d = &self.manifest.decoder;
        let element = match self.cache_type {
            TensorElementType::Float16 | TensorElementType::Bfloat16 => 2,
            _ => 4,
        };
        (d.num_layers * 2 * d.num_kv_heads * d.head_dim) as u64 * element
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stem(ids: &[i64], bytes: u64) -> Stem {
        Stem {
            ids: ids.to_vec(),
            image: None,
            positions: ids.len(),
            cache: Vec::new(),
            bytes,
            used: 0,
        }
    }

    fn prompt(ids: &[i64], stem: usize) -> Prompt {
        Prompt {
            ids: ids.to_vec(),
            features: None,
            stem,
        }
    }

    #[test]
    fn a_full_store_keeps_its_entries_until_one_goes_idle() {
        let mut s = Stems {
            limit: 100,
            ..Stems::default()
        };
        assert_eq!(s.insert(stem(&[1], 60)).ok(), Some(0));
        // Both are in use (used at lookup 0, now lookup 0): the new one is left out.
        assert!(s.insert(stem(&[2], 60)).is_err());
        assert_eq!((s.entries(), s.bytes), (1, 60));
        // Long unused: replaced.
        s.lookups = IDLE_LOOKUPS;
        assert_eq!(s.insert(stem(&[2], 60)).ok(), Some(0));
        assert_eq!((s.entries(), s.bytes), (1, 60));
        assert_eq!(s.entries[0].ids, vec![2]);
    }

    #[test]
    fn the_longest_stem_within_the_slack_serves() {
        let mut s = Stems {
            limit: 1000,
            ..Stems::default()
        };
        let long: Vec<i64> = (0..40).collect();
        for ids in [&long[..20], &long[..30], &[9; 25]] {
            assert!(s.insert(stem(ids, 1)).is_ok());
        }
        assert_eq!(s.find(&prompt(&long, 30)), Some(1));
        // The 30-id stem is not a prefix of a 30-id prompt with room to continue.
        assert_eq!(s.find(&prompt(&long[..30], 28)), Some(0));
        // A stem more than SLACK ids short of the prompt's own is not used.
        s.entries.remove(1);
        assert_eq!(s.find(&prompt(&long, 20 + SLACK + 1)), None);
    }
}
