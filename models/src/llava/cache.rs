//! Cache operations: gathering rows of the KV cache (forks, compaction, padding,
//! merging a running batch with fresh prompts).
use super::*;

/// Where a gather's rows come from: each source's first row in the joined batch,
/// and the pads (positive) or crop (negative) of its length axis.
struct Plan {
    index: Vec<i64>,
    pads: Vec<Vec<i64>>,
}

impl Llava {
    /// Builds caches `[picks, kv_heads, len, head_dim]` whose row `r` is row
    /// `picks[r].1` of `sources[picks[r].0]`, its first `len` positions copied to the
    /// front and the rest zero: forks a prompt's cache for its samples. In the bound
    /// modes this runs on the device. The sources stay; see [`Llava::regather`].
    pub fn gather(
        &mut self,
        sources: &[Cache],
        picks: &[(usize, usize)],
        len: usize,
    ) -> Result<Cache, ModelError> {
        let plan = self.plan(sources, picks, len)?;
        let layers = sources.first().map_or(0, Vec::len);
        (0..layers)
            .map(|l| {
                let layer: Vec<&(DynValue, DynValue)> = sources.iter().map(|s| &s[l]).collect();
                self.gather_layer(&layer, picks, len, &plan, l + 1 == layers)
            })
            .collect()
    }

    /// [`Llava::gather`] that consumes its sources one layer at a time: each source
    /// layer is freed as soon as its rows are copied, so the old and the new cache
    /// overlap by about one layer instead of the whole cache (a batch regrouping its
    /// rows needs half the memory).
    pub fn regather(
        &mut self,
        sources: Vec<Cache>,
        picks: &[(usize, usize)],
        len: usize,
    ) -> Result<Cache, ModelError> {
        let plan = self.plan(&sources, picks, len)?;
        let layers = sources.first().map_or(0, Vec::len);
        let mut sources: Vec<_> = sources.into_iter().map(Vec::into_iter).collect();
        let mut out = Vec::with_capacity(layers);
        for l in 0..layers {
            let layer: Vec<(DynValue, DynValue)> =
                sources.iter_mut().flat_map(|s| s.next()).collect();
            let refs: Vec<&(DynValue, DynValue)> = layer.iter().collect();
            out.push(self.gather_layer(&refs, picks, len, &plan, l + 1 == layers)?);
        }
        Ok(out)
    }

    /// A cache of `rows` rows of `len` positions on the decoder's device, its contents
    /// undefined: the row slots of a shared-buffer batch.
    pub fn alloc_cache(&mut self, rows: usize, len: usize) -> Result<Cache, ModelError> {
        let file = self.decoder_file();
        let err = |e: ort::Error| ModelError::run(&file, e);
        if self.allocator.is_none() {
            self.allocator =
                Some(ort::memory::Allocator::new(&self.decoder, self.memory.clone()).map_err(err)?);
        }
        let allocator = self.allocator.as_ref().expect("set above");
        let d = &self.manifest.decoder;
        let shape = vec![
            rows as i64,
            d.num_kv_heads as i64,
            len as i64,
            d.head_dim as i64,
        ];
        let new = || {
            ort::value::DynTensor::new(allocator, self.cache_type, shape.clone())
                .map(DynValue::from)
        };
        (0..d.num_layers)
            .map(|_| Ok((new().map_err(err)?, new().map_err(err)?)))
            .collect()
    }

    /// [`Llava::gather`] into rows `first..first + picks.len()` of `into` (a cache from
    /// [`Llava::alloc_cache`]), as long as its rows: the gather writes there directly,
    /// and the other rows are left as they are. Device modes only.
    pub fn gather_into(
        &mut self,
        sources: &[Cache],
        picks: &[(usize, usize)],
        into: &mut Cache,
        first: usize,
    ) -> Result<(), ModelError> {
        let file = self.decoder_file();
        let err = |e: String| ModelError::run(&file, e);
        if !self.kv_mode.on_device() {
            return Err(err(
                "gathering into rows of a cache needs a device mode".into()
            ));
        }
        let shape = match into.first() {
            Some((k, _)) => tensor::shape(k).map_err(err)?,
            None => return Err(err("a cache without layers".into())),
        };
        let [rows, heads, len, dim] = shape[..] else {
            return Err(err(format!(
                "expected a [rows, heads, len, dim] cache, got {shape:?}"
            )));
        };
        if first + picks.len() > rows as usize {
            return Err(err(format!(
                "rows {first}..{} outside a cache of {rows}",
                first + picks.len()
            )));
        }
        let plan = self.plan(sources, picks, len as usize)?;
        let view = [picks.len() as i64, heads, len, dim];
        let offset = first * (heads * len * dim) as usize;
        let layers = sources.first().map_or(0, Vec::len);
        for l in 0..layers {
            let layer: Vec<&(DynValue, DynValue)> = sources.iter().map(|s| &s[l]).collect();
            let (k, v) = &mut into[l];
            // SAFETY: `into` outlives the views, which `run_gather` drops with its
            // binding when the run is over; the rows they cover are the admitted ones,
            // which no other run touches until it returns.
            let outputs = unsafe {
                [
                    tensor::rows_view(k, &self.memory, offset, &view).map_err(err)?,
                    tensor::rows_view(v, &self.memory, offset, &view).map_err(err)?,
                ]
            };
            self.run_gather(&layer, &plan, Some(outputs), l + 1 == layers)?;
        }
        Ok(())
    }

    /// Checks the sources' shapes and the picks, and lays out the joined batch.
    fn plan(
        &self,
        sources: &[Cache],
        picks: &[(usize, usize)],
        len: usize,
    ) -> Result<Plan, ModelError> {
        let file = self.decoder_file();
        let err = |e: String| ModelError::run(&file, e);
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
            offsets.push(total);
            pads.push(ops::length_pads(len as i64 - p));
            total += b as usize;
        }
        let mut index = Vec::with_capacity(picks.len());
        for &(s, b) in picks {
            let start = *offsets
                .get(s)
                .ok_or_else(|| err(format!("no cache source {s}")))?;
            let end = offsets.get(s + 1).copied().unwrap_or(total);
            if start + b >= end {
                return Err(err(format!("cache row {b} outside source {s}")));
            }
            index.push((start + b) as i64);
        }
        Ok(Plan { index, pads })
    }

    /// One layer's key and value rows gathered from `layer` (one entry per source).
    /// `last`: on CUDA, the run hands the arena's free regions back to the device.
    fn gather_layer(
        &mut self,
        layer: &[&(DynValue, DynValue)],
        picks: &[(usize, usize)],
        len: usize,
        plan: &Plan,
        last: bool,
    ) -> Result<(DynValue, DynValue), ModelError> {
        let file = self.decoder_file();
        let err = |e: String| ModelError::run(&file, e);
        if !self.kv_mode.on_device() {
            let keys: Vec<&DynValue> = layer.iter().map(|s| &s.0).collect();
            let values: Vec<&DynValue> = layer.iter().map(|s| &s.1).collect();
            return Ok((
                tensor::gather_cache(&keys, picks, len).map_err(err)?,
                tensor::gather_cache(&values, picks, len).map_err(err)?,
            ));
        }
        let (k, v) = self.run_gather(layer, plan, None, last)?;
        Ok((
            k.ok_or_else(|| err("the gather graph returned too little".into()))?,
            v.ok_or_else(|| err("the gather graph returned too little".into()))?,
        ))
    }

    /// Runs the gather graph over one layer; its two outputs go to `into` when given
    /// (views of rows of a larger cache, nothing returned), else to new device tensors.
    fn run_gather(
        &mut self,
        layer: &[&(DynValue, DynValue)],
        plan: &Plan,
        into: Option<[tensor::RowsView; 2]>,
        last: bool,
    ) -> Result<(Option<DynValue>, Option<DynValue>), ModelError> {
        let file = self.decoder_file();
        let err = |e: String| ModelError::run(&file, e);
        let key = OpKey::Gather {
            ty: self.cache_type,
            tensors: 2,
            sources: layer.len(),
        };
        let memory = self.memory.clone();
        let shrink = self.shrink.clone().filter(|_| last);
        let session = self.op(key)?;
        let oe = |e: ort::Error| ModelError::run(&file, e);
        let mut binding = session.create_binding().map_err(oe)?;
        for (s, (k, v)) in layer.iter().enumerate() {
            binding.bind_input(ops::gather_input(0, s), k).map_err(oe)?;
            binding.bind_input(ops::gather_input(1, s), v).map_err(oe)?;
            let p = tensor::ints(vec![8], plan.pads[s].clone()).map_err(err)?;
            binding.bind_input(ops::gather_pads(s), &p).map_err(oe)?;
        }
        let n = plan.index.len() as i64;
        let idx = tensor::ints(vec![n], plan.index.clone()).map_err(err)?;
        binding.bind_input(ops::GATHER_INDEX, &idx).map_err(oe)?;
        let bound = into.is_some();
        match into {
            Some(views) => {
                for (t, view) in views.into_iter().enumerate() {
                    view.bind(&mut binding, ops::gather_output(t)).map_err(oe)?;
                }
            }
            None => {
                for t in 0..2 {
                    binding
                        .bind_output_to_device(ops::gather_output(t), &memory)
                        .map_err(oe)?;
                }
            }
        }
        let mut outputs = match &shrink {
            Some(options) => session.run_binding_with_options(&binding, options),
            None => session.run_binding(&binding),
        }
        .map_err(oe)?;
        if bound {
            return Ok((None, None));
        }
        Ok((
            outputs.remove(ops::gather_output(0)),
            outputs.remove(ops::gather_output(1)),
        ))
    }
}
