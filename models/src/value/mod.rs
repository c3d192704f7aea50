//! The value model: the decoder's final hidden state at the last real position of
//! `conversation(question, text)`, through the value head, one scalar per request.
use crate::device::{open_session, Device};
use crate::error::ModelError;
use crate::llava::{same_image, shared_ids, KvMode, Llava, Prompt};
use crate::manifest::{Kind, ValueHead};
use crate::memory;
use crate::ms_since;
use crate::tensor;
use ort::session::Session;
use ort::value::TensorElementType;
use std::path::Path;
use tsst_backend::{BackendError, RequestError, ScoreRequest, ValueBackend};

/// Texts scored per decoder run.
const SCORE_BATCH: usize = 8;

/// `0` scores every text whole (an ablation switch for benchmarks).
pub const PREFIX_REUSE_ENV: &str = "TSST_VALUE_PREFIX_REUSE";

/// Leading tokens texts must share to be scored from one prefill of them.
const MIN_SHARED: usize = 16;

/// Where a call's time went, for its debug line: milliseconds building prompts,
/// prefilling shared prefixes (and copying them into buffers), embedding the texts'
/// rests, running the rests, prefilling whole texts, and in the value head.
#[derive(Debug, Default, Clone, Copy)]
pub struct Phases {
    pub prompts: f64,
    pub prefix: f64,
    pub rests: f64,
    pub runs: f64,
    pub whole: f64,
    pub head: f64,
}

/// A run of consecutive texts in a batch and the ids they all begin with.
struct Shared {
    members: std::ops::Range<usize>,
    shared: usize,
}

pub struct OnnxValue {
    model: Llava,
    head: Session,
    spec: ValueHead,
    head_type: TensorElementType,
    /// Whether the head takes `[batch, hidden]` (else `[batch, 1, hidden]`).
    head_rank2: bool,
    /// Texts that share a prefix are scored from one prefill of it (see `values`).
    prefix_reuse: bool,
    /// The current call's.
    phases: Phases,
}

impl OnnxValue {
    pub fn load(dir: &Path, device: Device, ort_lib: Option<&Path>) -> Result<Self, ModelError> {
        let mut model = Llava::load(dir, Kind::Value, device, ort_lib)?;
        // Question stems only where TSST_STEM_CACHE_MB asks for them.
        model.set_stem_bytes(0);
        let spec = model
            .manifest
            .value_head
            .clone()
            .ok_or_else(|| ModelError::Manifest {
                path: dir.join(crate::manifest::FILE),
                reason: "field `value_head` is required for a value model".into(),
            })?;
        let env = crate::ort_lib::environment(ort_lib, device.is_gpu())?;
        let file = dir.join(&spec.file);
        let head = open_session(&env, device, &file)?;
        let bad = |reason: String| ModelError::Load {
            path: file.clone(),
            reason,
        };
        let head_type = tensor::input_type(&head, &spec.input).map_err(bad)?;
        let rank = head
            .inputs()
            .iter()
            .find(|o| o.name() == spec.input)
            .and_then(|o| o.dtype().tensor_shape().map(|s| s.len()))
            .unwrap_or(2);
        Ok(OnnxValue {
            head,
            spec,
            head_type,
            head_rank2: rank != 3,
            prefix_reuse: std::env::var(PREFIX_REUSE_ENV).map_or(true, |v| v != "0"),
            phases: Phases::default(),
            model,
        })
    }

    pub fn model(&mut self) -> &mut Llava {
        &mut self.model
    }

    /// Where the last call's time went.
    pub fn phases(&self) -> Phases {
        self.phases
    }

    /// Scores `(question, text)` pairs; a request whose prompt cannot be built fails
    /// alone.
    pub fn values(
        &mut self,
        batch: &[ScoreRequest<'_>],
    ) -> Result<Vec<Result<f64, RequestError>>, ModelError> {
        let began = std::time::Instant::now();
        self.phases = Phases::default();
        let items: Vec<_> = batch.iter().map(|r| (r.question, r.text)).collect();
        let prompts = self.model.prompts(&items)?;
        self.phases.prompts = ms_since(began);
        let max_length = self.model.manifest.decoder.max_length;
        let mut out: Vec<Result<f64, RequestError>> = Vec::with_capacity(batch.len());
        let mut live: Vec<(usize, Prompt)> = Vec::new();
        for (i, prompt) in prompts.into_iter().enumerate() {
            match prompt {
                Ok(p) => {
                    let len = self.model.embedded_len(&p);
                    if len > max_length {
                        out.push(Err(RequestError(format!(
                            "the text takes {len} positions; the model takes at most {max_length}"
                        ))));
                    } else {
                        out.push(Err(RequestError("not scored".into())));
                        live.push((i, p));
                    }
                }
                Err(e) => out.push(Err(RequestError(e))),
            }
        }
        // Texts that continue one prefix (the children of one node) are scored from
        // one prefill of the prefix.
        let mut scored = vec![false; live.len()];
        let groups = if self.prefix_reuse {
            self.shared_prefixes(&live)
        } else {
            Vec::new()
        };
        for group in groups {
            let members = &live[group.members.clone()];
            let refs: Vec<&Prompt> = members.iter().map(|(_, p)| p).collect();
            match self.score_continuations(&refs, group.shared) {
                Ok(values) => {
                    for ((i, _), v) in members.iter().zip(values) {
                        out[*i] = Ok(v);
                    }
                    scored[group.members].fill(true);
                }
                // Left to the chunks below, which halve on out-of-memory.
                Err(e) if memory::is_out_of_memory(&e.to_string()) => {
                    self.model.drop_stems();
                    tracing::warn!(texts = members.len(), error = %e, "out of device memory; scoring the texts of a shared prefix whole");
                }
                // A runtime whose attention cannot continue a cache by several
                // positions: whole texts from now on (once, loudly).
                Err(e) => {
                    tracing::warn!(error = %e, "scoring from a shared prefix failed; this model scores whole texts from now on");
                    self.prefix_reuse = false;
                    break;
                }
            }
        }
        let live: Vec<(usize, Prompt)> = live
            .into_iter()
            .zip(scored)
            .filter(|(_, done)| !done)
            .map(|(l, _)| l)
            .collect();
        // Chunks of SCORE_BATCH texts; a chunk the device has no memory for is
        // scored in halves (the policy on the same device may hold the memory for a
        // moment), down to one text.
        let (mut start, mut size) = (0, SCORE_BATCH);
        while start < live.len() {
            let chunk = &live[start..(start + size).min(live.len())];
            let refs: Vec<&Prompt> = chunk.iter().map(|(_, p)| p).collect();
            match self.score_prompts(&refs) {
                Ok(values) => {
                    for ((i, _), v) in chunk.iter().zip(values) {
                        out[*i] = Ok(v);
                    }
                    start += chunk.len();
                }
                Err(e) if size > 1 && memory::is_out_of_memory(&e.to_string()) => {
                    self.model.drop_stems();
                    size /= 2;
                    tracing::warn!(texts = size, error = %e, "out of device memory; scoring fewer texts at once");
                }
                Err(e) => return Err(e),
            }
        }
        self.log_call(batch.len(), live.len(), began);
        Ok(out)
    }

    /// The call's debug line.
    fn log_call(&self, texts: usize, whole: usize, began: std::time::Instant) {
        tracing::debug!(
            texts,
            whole,
            prefilled = self.model.prefilled(),
            stems = self.model.stems().entries(),
            stem_hits = self.model.stems().hits,
            stem_misses = self.model.stems().misses,
            ms = began.elapsed().as_millis() as u64,
            prompts_ms = self.phases.prompts as u64,
            prefix_ms = self.phases.prefix as u64,
            rests_ms = self.phases.rests as u64,
            runs_ms = self.phases.runs as u64,
            whole_ms = self.phases.whole as u64,
            head_ms = self.phases.head as u64,
            "texts scored"
        );
    }

    /// The runs of two or more consecutive texts in `live` that share a prefix of at
    /// least [`MIN_SHARED`] tokens: the same image, each text at least one token
    /// longer than the prefix, and no image token after it.
    fn shared_prefixes(&self, live: &[(usize, Prompt)]) -> Vec<Shared> {
        let image = self.model.manifest.special_tokens.image;
        let mut runs: Vec<Shared> = Vec::new();
        let mut start = 0;
        while start < live.len() {
            let first = &live[start].1;
            let mut shared = first.ids.len().saturating_sub(1);
            let mut end = start + 1;
            while end < live.len() {
                let next = &live[end].1;
                let common = shared_ids(&first.ids, &next.ids).min(next.ids.len() - 1);
                if !same_image(&first.features, &next.features) || common.min(shared) < MIN_SHARED {
                    break;
                }
                shared = common.min(shared);
                end += 1;
            }
            let after_image = live[start..end]
                .iter()
                .all(|(_, p)| !p.ids[shared..].contains(&image));
            if end - start >= 2 && after_image {
                runs.push(Shared {
                    members: start..end,
                    shared,
                });
            }
            start = end;
        }
        runs
    }

    /// Values of texts whose first `shared` ids are the same: the prefix is prefilled
    /// once (in a shared buffer, with the first text's rest), then each text's
    /// remaining tokens run on its cache (in a shared buffer, from where it parts from
    /// the text before it; one text per run:
    /// GroupQueryAttention takes several new positions over a past for one sequence
    /// only). A run reads the weights once for a few tokens, where prefilling the whole
    /// text again would compute every prefix position again.
    fn score_continuations(
        &mut self,
        prompts: &[&Prompt],
        shared: usize,
    ) -> Result<Vec<f64>, ModelError> {
        let prefix = Prompt {
            ids: prompts[0].ids[..shared].to_vec(),
            features: prompts[0].features.clone(),
            stem: prompts[0].stem.min(shared - 1),
        };
        // In a shared buffer one copy of the prefix serves every text: as long as the
        // prefix plus the longest rest, each text writes its positions after the
        // prefix over the last one's, and its mask reaches only its own. Otherwise each
        // run returns a longer present beside its past: a copy per text.
        let in_place = self.model.kv_mode() == KvMode::Shared;
        let longest = prompts
            .iter()
            .map(|p| p.ids.len() - shared)
            .max()
            .unwrap_or(1);
        // The prefix over its question's stem where one serves, else whole. In a
        // shared buffer the first text is prefilled whole instead of its prefix alone:
        // the prefix's cache is the same either way (attention is causal), the next
        // text writes its rest over the first one's, and the first text's value comes
        // with the prefill, so one run per node (a read of every weight) is saved.
        let t = std::time::Instant::now();
        let mut last = Vec::with_capacity(prompts.len());
        let (past, mut buffer, cached) = match self.model.prefill_over_stem(&prefix, longest)? {
            Some((past, run)) => (past, Some(run.presents), None),
            None if in_place => {
                let (lens, mut run) = self.model.prefill_last(&[prompts[0]])?;
                self.model.count_prefilled(lens[0]);
                last.push(run.picked.remove(0));
                let past = lens[0] - (prompts[0].ids.len() - shared);
                let buffer = self
                    .model
                    .gather(&[run.presents], &[(0, 0)], past + longest)?;
                (past, Some(buffer), None)
            }
            None => {
                let (lens, run) = self.model.prefill_last(&[&prefix])?;
                self.model.count_prefilled(lens[0]);
                (lens[0], None, Some([run.presents]))
            }
        };
        self.phases.prefix += ms_since(t);
        // The texts whose rests still run (the first one's ran with the prefix).
        let all = prompts;
        let prompts = &all[last.len()..];
        // In a shared buffer each text leaves its positions after the prefix's, so a
        // text that begins like the one before it (a sibling: the same node's prompt)
        // keeps those and runs only from where the two part. `keeps`: the ids each
        // text finds in the buffer (at least the prefix, at most all but its last).
        let mut written: &[i64] = if last.is_empty() {
            &all[0].ids[..shared]
        } else {
            &all[0].ids
        };
        let mut keeps = Vec::with_capacity(prompts.len());
        for p in prompts {
            let same = if in_place {
                shared_ids(&written[shared..], &p.ids[shared..])
            } else {
                0
            };
            keeps.push((shared + same).min(p.ids.len() - 1));
            written = &p.ids;
        }
        // Every text's rest embedded in one run.
        let t = std::time::Instant::now();
        let rests: Vec<Prompt> = prompts
            .iter()
            .zip(&keeps)
            .map(|(p, &keep)| Prompt {
                ids: p.ids[keep..].to_vec(),
                features: None,
                stem: 0,
            })
            .collect();
        let embedded = self
            .model
            .embed_prompts(&rests.iter().collect::<Vec<_>>())?;
        self.phases.rests += ms_since(t);
        let t = std::time::Instant::now();
        for ((rest, embeds), &keep) in rests.iter().zip(embedded).zip(&keeps) {
            let new = rest.ids.len();
            let cache = match (buffer.take(), &cached) {
                (Some(b), _) => b,
                (None, Some(cached)) => self.model.gather(cached, &[(0, 0)], past)?,
                (None, None) => unreachable!("a stem's prefix is always in a buffer"),
            };
            // The prefix's positions, then the kept ids' (none of them an image).
            let at = past + keep - shared;
            let mut out = self.model.continue_one(embeds, new, at, cache, in_place)?;
            last.push(out.picked.remove(0));
            if in_place {
                buffer = Some(out.presents);
            }
        }
        self.phases.runs += ms_since(t);
        self.model
            .count_prefilled(rests.iter().map(|r| r.ids.len()).sum());
        self.head(last)
    }

    /// Values of whole texts: each over its question's stem where one serves, the
    /// others prefilled together.
    fn score_prompts(&mut self, prompts: &[&Prompt]) -> Result<Vec<f64>, ModelError> {
        let t = std::time::Instant::now();
        let mut last: Vec<Option<Vec<f32>>> = Vec::with_capacity(prompts.len());
        let mut whole: Vec<&Prompt> = Vec::new();
        for p in prompts {
            match self.model.prefill_over_stem(p, 0)? {
                Some((_, mut run)) => last.push(Some(run.picked.remove(0))),
                None => {
                    last.push(None);
                    whole.push(p);
                }
            }
        }
        if !whole.is_empty() {
            let (lens, run) = self.model.prefill_last(&whole)?;
            self.model.count_prefilled(lens.iter().sum());
            let mut picked = run.picked.into_iter();
            for l in last.iter_mut().filter(|l| l.is_none()) {
                *l = picked.next();
            }
        }
        self.phases.whole += ms_since(t);
        self.head(last.into_iter().flatten().collect())
    }

    /// The value head over each text's last hidden state.
    fn head(&mut self, last: Vec<Vec<f32>>) -> Result<Vec<f64>, ModelError> {
        let t = std::time::Instant::now();
        let values = self.run_head(last);
        self.phases.head += ms_since(t);
        values
    }

    fn run_head(&mut self, last: Vec<Vec<f32>>) -> Result<Vec<f64>, ModelError> {
        let hidden = self.model.hidden_size();
        let rows = last.len();
        let shape = if self.head_rank2 {
            vec![rows as i64, hidden as i64]
        } else {
            vec![rows as i64, 1, hidden as i64]
        };
        let input = tensor::floats(self.head_type, shape, last.concat())
            .map_err(|e| ModelError::run(&self.spec.file, e))?;
        let mut outputs = {
            let _guard = crate::device::run_guard();
            self.head.run(vec![(self.spec.input.as_str(), input)])
        }
        .map_err(|e| ModelError::run(&self.spec.file, e))?;
        let value = outputs.remove(&self.spec.output).ok_or_else(|| {
            ModelError::run(&self.spec.file, format!("no output `{}`", self.spec.output))
        })?;
        let (_, data) = tensor::read(&value).map_err(|e| ModelError::run(&self.spec.file, e))?;
        if data.len() != rows {
            return Err(ModelError::run(
                &self.spec.file,
                format!("{} values for {rows} texts", data.len()),
            ));
        }
        Ok(data.into_iter().map(f64::from).collect())
    }
}

impl ValueBackend for OnnxValue {
    fn name(&self) -> String {
        format!("onnx value {}", self.model.label())
    }

    fn score(
        &mut self,
        batch: &[ScoreRequest<'_>],
    ) -> Result<Vec<Result<f64, RequestError>>, BackendError> {
        self.values(batch).map_err(|e| BackendError {
            backend: self.name(),
            reason: e.to_string(),
        })
    }
}
