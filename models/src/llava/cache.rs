//! Cache operations: gathering rows of the KV cache (forks, compaction, padding).
use super::*;

impl Llava {
    /// Builds caches `[picks, kv_heads, len, head_dim]` whose row `r` is row
    /// `picks[r].1` of `sources[picks[r].0]`, positions copied to the front and the rest
    /// zero: forks a prompt's cache for its samples, merges prefill chunks, drops
    /// finished rows, and widens caches into shared buffers. In the bound modes this
    /// runs on the device.
    pub fn gather(
        &mut self,
        sources: &[Cache],
        picks: &[(usize, usize)],
        len: usize,
    ) -> Result<Cache, ModelError> {
        let file = self.decoder_file();
        let err = |e: String| ModelError::run(&file, e);
        let layers = self.manifest.decoder.num_layers;
        if !self.kv_mode.on_device() {
            return (0..layers)
                .map(|l| {
                    let keys: Vec<&DynValue> = sources.iter().map(|s| &s[l].0).collect();
                    let values: Vec<&DynValue> = sources.iter().map(|s| &s[l].1).collect();
                    Ok((
                        tensor::gather_cache(&keys, picks, len).map_err(err)?,
                        tensor::gather_cache(&values, picks, len).map_err(err)?,
                    ))
                })
                .collect();
        }
        let mut offsets = Vec::with_capacity(sources.len());
        let mut pads = Vec::with_capacity(sources.len());
        let mut total = 0usize;
        for s in sources {
            let first = s
                .first()
                .ok_or_else(|| err("a cache without layers".into()))?;
            let shape = tensor::shape(&first.0).map_err(err)?;
            let [b, _, p, _] = shape[..] else {
                return Err(err(format!(
                    "expected a [batch, heads, past, dim] cache, got {shape:?}"
                )));
            };
            let (b, p) = (b as usize, p as usize);
            if p > len {
                return Err(err(format!(
                    "cannot shorten a cache of {p} positions to {len}"
                )));
            }
            offsets.push(total);
            pads.push(ops::length_pads(len - p));
            total += b;
        }
        let mut idx = Vec::with_capacity(picks.len());
        for &(s, b) in picks {
            let start = *offsets
                .get(s)
                .ok_or_else(|| err(format!("no cache source {s}")))?;
            let end = offsets.get(s + 1).copied().unwrap_or(total);
            if start + b >= end {
                return Err(err(format!("cache row {b} outside source {s}")));
            }
            idx.push((start + b) as i64);
        }
        let key = OpKey::Gather {
            ty: self.cache_type,
            tensors: 2 * layers,
            sources: sources.len(),
        };
        let memory = self.memory.clone();
        let shrink = self.shrink.clone();
        let session = self.op(key)?;
        let oe = |e: ort::Error| ModelError::run(&file, e);
        let mut binding = session.create_binding().map_err(oe)?;
        for (s, source) in sources.iter().enumerate() {
            for (l, (k, v)) in source.iter().enumerate() {
                binding
                    .bind_input(ops::gather_input(2 * l, s), k)
                    .map_err(oe)?;
                binding
                    .bind_input(ops::gather_input(2 * l + 1, s), v)
                    .map_err(oe)?;
            }
            let p = tensor::ints(vec![8], pads[s].clone()).map_err(err)?;
            binding.bind_input(ops::gather_pads(s), &p).map_err(oe)?;
        }
        let n = idx.len() as i64;
        let idx = tensor::ints(vec![n], idx).map_err(err)?;
        binding.bind_input(ops::GATHER_INDEX, &idx).map_err(oe)?;
        for t in 0..2 * layers {
            binding
                .bind_output_to_device(ops::gather_output(t), &memory)
                .map_err(oe)?;
        }
        let mut outputs = match &shrink {
            Some(options) => session.run_binding_with_options(&binding, options),
            None => session.run_binding(&binding),
        }
        .map_err(oe)?;
        let mut take = |t: usize| {
            outputs
                .remove(ops::gather_output(t))
                .ok_or_else(|| ModelError::run(&file, "the gather graph returned too little"))
        };
        let mut out = Vec::with_capacity(layers);
        for l in 0..layers {
            let k = take(2 * l)?;
            let v = take(2 * l + 1)?;
            out.push((k, v));
        }
        Ok(out)
    }
}
