//! Decoder runs: empty caches, the batched prefill, and decode steps with the cache
//! on the host, bound to the device, or in one shared device buffer.
use super::*;
use crate::device::run_guard;
use crate::ms_since;
use ort::session::IoBinding;
use std::time::Instant;

/// Binds each layer's past caches as inputs and, `in_place`, as its presents too (one
/// shared buffer: the run writes its new positions into the past).
pub(super) fn bind_pasts(
    d: &Decoder,
    binding: &mut IoBinding,
    past: &mut Cache,
    in_place: bool,
) -> Result<(), ort::Error> {
    for (i, (k, v)) in past.iter_mut().enumerate() {
        binding.bind_input(Decoder::layer_name(&d.past_key, i), &*k)?;
        binding.bind_input(Decoder::layer_name(&d.past_value, i), &*v)?;
        if in_place {
            binding.bind_output(Decoder::layer_name(&d.present_key, i), &mut *k)?;
            binding.bind_output(Decoder::layer_name(&d.present_value, i), &mut *v)?;
        }
    }
    Ok(())
}

impl Llava {
    /// An empty cache for `rows` sequences, one per layer (host tensors: in the bound
    /// modes ONNX Runtime copies their zero bytes).
    pub fn empty_caches(&self, rows: usize) -> Result<Cache, ModelError> {
        let d = &self.manifest.decoder;
        (0..d.num_layers)
            .map(|_| {
                let k = tensor::empty_cache(self.cache_type, rows, d.num_kv_heads, d.head_dim)?;
                let v = tensor::empty_cache(self.cache_type, rows, d.num_kv_heads, d.head_dim)?;
                Ok((k, v))
            })
            .collect::<Result<_, String>>()
            .map_err(|e| self.run_error(&d.file, e))
    }

    /// One decoder run over `rows` sequences of `seq` new positions.
    ///
    /// `embeds` is `[rows, seq, hidden]`, `mask` is `[rows, width]` (`past + seq`, or in
    /// a shared-buffer step at most the capacity), `positions` (`[rows, seq]`) is used
    /// by the torch route only, and `past` holds each layer's
    /// `[rows, kv_heads, past, head_dim]` caches. With `shared` (a [`KvMode::Shared`]
    /// step) each past tensor is also bound as its present: the run writes the new
    /// positions into it and returns it. `want` says what comes back to the host.
    /// Prefills prompts together from empty caches (right-padded, see [`Prefill`]);
    /// the output picks each prompt's last real position. Returns each prompt's length
    /// with it.
    pub fn prefill_last(
        &mut self,
        prompts: &[&Prompt],
    ) -> Result<(Vec<usize>, DecoderOutput), ModelError> {
        let embedded = self.embed_prompts(prompts)?;
        let pre = Prefill::new(&embedded, self.hidden_size());
        let past = self.empty_caches(pre.rows)?;
        let at: Vec<(usize, usize)> = pre
            .lens
            .iter()
            .enumerate()
            .map(|(b, &l)| (b, l - 1))
            .collect();
        let run = self.decode(
            pre.rows,
            Embeds::Host(pre.embeds),
            pre.mask,
            pre.positions,
            past,
            false,
            Want::Rows(&at),
        )?;
        Ok((pre.lens, run))
    }

    /// One sequence's `new` positions (`embeds`, on the host) run after the `past`
    /// positions of `cache`, in place where `in_place`; picks the last position's
    /// output.
    pub fn continue_one(
        &mut self,
        embeds: Vec<f32>,
        new: usize,
        past: usize,
        cache: Cache,
        in_place: bool,
    ) -> Result<DecoderOutput, ModelError> {
        self.decode(
            1,
            Embeds::Host(embeds),
            vec![1; past + new],
            (past..past + new).map(|t| t as i64).collect(),
            cache,
            in_place,
            Want::Rows(&[(0, new - 1)]),
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub fn decode(
        &mut self,
        rows: usize,
        embeds: Embeds,
        mask: Vec<i64>,
        positions: Vec<i64>,
        past: Cache,
        shared: bool,
        want: Want<'_>,
    ) -> Result<DecoderOutput, ModelError> {
        let d = self.manifest.decoder.clone();
        let file = self.decoder_file();
        let err = |e: String| ModelError::run(&file, e);
        let hidden = d.hidden_size;
        if let Want::Sample {
            temperature,
            uniform,
        } = want
        {
            if self.manifest.kind != Kind::Policy {
                return Err(err("sampling needs a policy's logits".into()));
            }
            if temperature.len() != rows || uniform.len() != rows {
                return Err(err(format!(
                    "{} temperatures and {} draws for {rows} rows",
                    temperature.len(),
                    uniform.len()
                )));
            }
        }
        let began = Instant::now();
        let embeds = match embeds {
            Embeds::Ids(ids) => {
                if let (
                    true,
                    Some(_),
                    Want::Sample {
                        temperature,
                        uniform,
                    },
                ) = (shared, &self.graphs, want)
                {
                    return self.decode_graph(rows, ids, mask, past, temperature, uniform);
                }
                self.embed_step(ids)?
            }
            Embeds::Host(data) => {
                let seq = data.len().checked_div(rows * hidden).unwrap_or(0);
                tensor::floats(
                    self.embeds_type,
                    vec![rows as i64, seq as i64, hidden as i64],
                    data,
                )
                .map_err(err)?
            }
        };
        let seq = tensor::shape(&embeds)
            .map_err(err)?
            .get(1)
            .copied()
            .unwrap_or(0) as usize;
        let width = mask.len().checked_div(rows).unwrap_or(0);
        let mut inputs: Vec<(String, DynValue)> = Vec::with_capacity(3);
        inputs.push((d.inputs_embeds.clone(), embeds));
        inputs.push((
            d.attention_mask.clone(),
            tensor::int_tensor(self.mask_type, vec![rows as i64, width as i64], mask)
                .map_err(err)?,
        ));
        if let Some(name) = &d.position_ids {
            inputs.push((
                name.clone(),
                tensor::ints(vec![rows as i64, seq as i64], positions).map_err(err)?,
            ));
        }
        let wanted = match self.manifest.kind {
            Kind::Policy => d.logits.clone(),
            Kind::Value => d.hidden_states.clone(),
        }
        .ok_or_else(|| err("the manifest names no output to read".into()))?;
        if shared && self.kv_mode != KvMode::Shared {
            return Err(err("a shared-buffer step outside KvMode::Shared".into()));
        }
        if self.kv_mode.on_device() {
            if shared {
                self.step_times.inputs_ms += ms_since(began);
            }
            self.decode_bound(inputs, past, shared, &wanted, want)
        } else {
            self.decode_host(inputs, past, &wanted, want)
        }
    }

    fn decode_host(
        &mut self,
        mut inputs: Vec<(String, DynValue)>,
        past: Cache,
        wanted: &str,
        want: Want<'_>,
    ) -> Result<DecoderOutput, ModelError> {
        let d = self.manifest.decoder.clone();
        let file = self.decoder_file();
        let err = |e: String| ModelError::run(&file, e);
        for (i, (k, v)) in past.into_iter().enumerate() {
            inputs.push((Decoder::layer_name(&d.past_key, i), k));
            inputs.push((Decoder::layer_name(&d.past_value, i), v));
        }
        let mut outputs = {
            let _guard = run_guard();
            match &self.plain {
                Some(options) => self.decoder.run_with_options(inputs, options),
                None => self.decoder.run(inputs),
            }
        }
        .map_err(|e| err(e.to_string()))?;
        let value = outputs
            .remove(wanted)
            .ok_or_else(|| err(format!("no output `{wanted}`")))?;
        let (picked, choices) = match want {
            Want::Rows(at) => (tensor::pick_rows(&value, at).map_err(err)?, Vec::new()),
            Want::Sample {
                temperature,
                uniform,
            } => {
                let at: Vec<(usize, usize)> = (0..temperature.len()).map(|r| (r, 0)).collect();
                let rows = tensor::pick_rows(&value, &at).map_err(err)?;
                let choices = rows
                    .iter()
                    .zip(temperature.iter().zip(uniform))
                    .map(|(logits, (&t, &u))| choose_with(logits, f64::from(t), || f64::from(u)))
                    .collect();
                (Vec::new(), choices)
            }
        };
        let mut presents = Vec::with_capacity(d.num_layers);
        for i in 0..d.num_layers {
            let kn = Decoder::layer_name(&d.present_key, i);
            let vn = Decoder::layer_name(&d.present_value, i);
            match (outputs.remove(&kn), outputs.remove(&vn)) {
                (Some(k), Some(v)) => presents.push((k, v)),
                _ => return Err(err(format!("no output `{kn}` / `{vn}`"))),
            }
        }
        Ok(DecoderOutput {
            picked,
            choices,
            presents,
        })
    }

    fn decode_bound(
        &mut self,
        inputs: Vec<(String, DynValue)>,
        mut past: Cache,
        shared: bool,
        wanted: &str,
        want: Want<'_>,
    ) -> Result<DecoderOutput, ModelError> {
        let d = self.manifest.decoder.clone();
        let file = self.decoder_file();
        let err = |e: ort::Error| ModelError::run(&file, e);
        // Presents allocated here (set_prealloc_presents): past length + new positions.
        let mut own: Option<Cache> = None;
        if !shared && self.prealloc {
            let seq = tensor::shape(&inputs[0].1)
                .map_err(|e| ModelError::run(&file, e))?
                .get(1)
                .copied()
                .unwrap_or(0);
            self.allocator()?;
            let allocator = self.allocator.as_ref().expect("made above");
            let mut fresh = Vec::with_capacity(past.len());
            for (k, _) in &past {
                let mut shape = tensor::shape(k).map_err(|e| ModelError::run(&file, e))?;
                shape[2] += seq;
                let new = |shape: &[i64]| {
                    ort::value::DynTensor::new(allocator, self.cache_type, shape.to_vec())
                        .map(DynValue::from)
                };
                fresh.push((new(&shape).map_err(err)?, new(&shape).map_err(err)?));
            }
            own = Some(fresh);
        }
        // A fresh binding per run: outputs bound to a device (not to a tensor) keep the
        // previous run's buffers otherwise, which a differently shaped present cannot
        // reuse.
        let began = Instant::now();
        let mut binding = self.decoder.create_binding().map_err(err)?;
        for (name, value) in &inputs {
            binding.bind_input(name.as_str(), value).map_err(err)?;
        }
        bind_pasts(&d, &mut binding, &mut past, shared).map_err(err)?;
        if !shared {
            // Presents of their own: ours where allocated, else ONNX Runtime's.
            for i in 0..past.len() {
                let nk = Decoder::layer_name(&d.present_key, i);
                let nv = Decoder::layer_name(&d.present_value, i);
                if let Some(own) = own.as_mut() {
                    binding.bind_output(nk, &mut own[i].0).map_err(err)?;
                    binding.bind_output(nv, &mut own[i].1).map_err(err)?;
                } else {
                    binding
                        .bind_output_to_device(nk, &self.memory)
                        .map_err(err)?;
                    binding
                        .bind_output_to_device(nv, &self.memory)
                        .map_err(err)?;
                }
            }
        }
        binding
            .bind_output_to_device(wanted, &self.memory)
            .map_err(err)?;
        let (value, presents) = {
            // A shared-buffer step keeps its arena; a prefill (or a bound-mode step)
            // gives back what the last batch left free.
            // With CUDA graphs on, no decoder run shrinks the arena (see `graph`).
            let options = match &self.plain {
                Some(plain) => Some(plain.clone()),
                None => self.shrink.clone().filter(|_| !shared),
            };
            let _guard = run_guard();
            let ran = Instant::now();
            if shared {
                self.step_times.bind_ms += ms_since(began);
            }
            let mut outputs = match &options {
                Some(options) => self.decoder.run_binding_with_options(&binding, options),
                None => self.decoder.run_binding(&binding),
            }
            .map_err(err)?;
            if shared {
                self.step_times.run_ms += ms_since(ran);
            }
            let value = outputs
                .remove(wanted)
                .ok_or_else(|| ModelError::run(&file, format!("no output `{wanted}`")))?;
            let presents = if shared || own.is_some() {
                None
            } else {
                let mut presents = Vec::with_capacity(d.num_layers);
                for i in 0..d.num_layers {
                    let kn = Decoder::layer_name(&d.present_key, i);
                    let vn = Decoder::layer_name(&d.present_value, i);
                    match (outputs.remove(&kn), outputs.remove(&vn)) {
                        (Some(k), Some(v)) => presents.push((k, v)),
                        _ => {
                            return Err(ModelError::run(
                                &file,
                                format!("no output `{kn}` / `{vn}`"),
                            ))
                        }
                    }
                }
                Some(presents)
            };
            (value, presents)
        };
        drop(binding);
        let sampled = Instant::now();
        let (picked, choices) = match want {
            Want::Rows(at) => (self.pick(&value, at)?, Vec::new()),
            Want::Sample {
                temperature,
                uniform,
            } => (Vec::new(), self.sample(&value, temperature, uniform)?),
        };
        if shared {
            self.step_times.sample_ms += ms_since(sampled);
            self.step_times.steps += 1;
        }
        let presents = match (presents, own) {
            (Some(p), _) => p,
            (None, Some(own)) => own,
            (None, None) => past,
        };
        Ok(DecoderOutput {
            picked,
            choices,
            presents,
        })
    }
}

/// The inputs of a decode step over row slots in shared buffers: per slot, the id
/// to feed and the positions already in the slot (`None`: a free slot, fed `pad`
/// over a one-position mask). Returns the ids, the mask (`[slots, width]`: ones for
/// each row's positions and the new one; GroupQueryAttention takes each row's length
/// from it) and the positions.
pub fn slot_step_inputs(rows: &[Option<(i64, usize)>], pad: i64) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
    let n = rows.len();
    let width = rows
        .iter()
        .flatten()
        .map(|&(_, valid)| valid + 1)
        .max()
        .unwrap_or(1);
    let mut ids = Vec::with_capacity(n);
    let mut mask = vec![0i64; n * width];
    let mut positions = Vec::with_capacity(n);
    for (s, row) in rows.iter().enumerate() {
        let (id, valid) = row.unwrap_or((pad, 0));
        ids.push(id);
        mask[s * width..s * width + valid + 1].fill(1);
        positions.push(valid as i64);
    }
    (ids, mask, positions)
}

/// A batch of prompts laid out for one prefill run, right-padded: each row's real
/// positions come first, so the genai route's mask-derived positions are 0..len and
/// the torch route's positions are given explicitly.
pub struct Prefill {
    pub rows: usize,
    pub seq: usize,
    pub lens: Vec<usize>,
    pub embeds: Vec<f32>,
    pub mask: Vec<i64>,
    pub positions: Vec<i64>,
}

impl Prefill {
    pub fn new(embedded: &[Vec<f32>], hidden: usize) -> Prefill {
        let lens: Vec<usize> = embedded.iter().map(|e| e.len() / hidden).collect();
        let seq = lens.iter().copied().max().unwrap_or(0);
        let rows = embedded.len();
        let mut embeds = vec![0f32; rows * seq * hidden];
        let mut mask = vec![0i64; rows * seq];
        let mut positions = Vec::with_capacity(rows * seq);
        for (r, e) in embedded.iter().enumerate() {
            embeds[r * seq * hidden..r * seq * hidden + e.len()].copy_from_slice(e);
            for m in &mut mask[r * seq..r * seq + lens[r]] {
                *m = 1;
            }
            positions.extend(0..seq as i64);
        }
        Prefill {
            rows,
            seq,
            lens,
            embeds,
            mask,
            positions,
        }
    }
}
