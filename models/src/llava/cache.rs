//! Cache operations: gathering rows of the KV cache (forks, compaction, padding,
//! merging a running batch with fresh prompts).
use super::*;
use crate::device::run_guard;

/// Slot capacities are multiples of this many positions, so that chains growing a
/// little longer each call do not allocate again (a freed pool's regions stay in ONNX
/// Runtime's arena, where buffers of another size may not fit).
const CAPACITY_STEP: usize = 256;

/// Row slots in shared device buffers (`[slots, kv_heads, capacity, head_dim]` per
/// cache tensor), kept between calls while they fit: the policy's and the value
/// model's continuous batching.
pub struct SlotPool {
    pub cache: Cache,
    pub slots: usize,
    pub capacity: usize,
}

/// The next admission into row slots: items taken in order from the front of
/// `waiting` while each fits the `free` slots left (`size` rows each), at most `most`.
pub fn take_fitting<T: Copy>(
    waiting: &mut std::collections::VecDeque<T>,
    mut free: usize,
    most: usize,
    size: impl Fn(T) -> usize,
) -> Vec<T> {
    let mut chunk = Vec::new();
    while let Some(&next) = waiting.front() {
        let n = size(next);
        if n > free || chunk.len() == most {
            break;
        }
        free -= n;
        chunk.push(next);
        waiting.pop_front();
    }
    chunk
}

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
        if !self.kv_mode.on_device() {
            return (0..layers)
                .map(|l| {
                    let layer: Vec<&(DynValue, DynValue)> = sources.iter().map(|s| &s[l]).collect();
                    self.gather_host(&layer, picks, len)
                })
                .collect();
        }
        // Every layer in one run: the sources stay, so a run per layer would save no
        // memory, only add runs.
        let tensors = by_tensor(sources, 0..layers);
        let out = self.run_gather(&tensors, &plan, None, true)?;
        pairs(out, &self.decoder_file())
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
            if !self.kv_mode.on_device() {
                out.push(self.gather_host(&refs, picks, len)?);
                continue;
            }
            let tensors = vec![
                refs.iter().map(|s| &s.0).collect(),
                refs.iter().map(|s| &s.1).collect(),
            ];
            let pair = self.run_gather(&tensors, &plan, None, l + 1 == layers)?;
            out.extend(pairs(pair, &self.decoder_file())?);
        }
        Ok(out)
    }

    /// The decoder's allocator (its device, its arena), made on first use.
    pub(super) fn allocator(&mut self) -> Result<&ort::memory::Allocator, ModelError> {
        if self.allocator.is_none() {
            let allocator = ort::memory::Allocator::new(&self.decoder, self.memory.clone())
                .map_err(|e| ModelError::run(&self.decoder_file(), e))?;
            self.allocator = Some(allocator);
        }
        Ok(self.allocator.as_ref().expect("set above"))
    }

    /// A cache of `rows` rows of `len` positions on the decoder's device, its contents
    /// undefined: the row slots of a shared-buffer batch.
    pub fn alloc_cache(&mut self, rows: usize, len: usize) -> Result<Cache, ModelError> {
        let file = self.decoder_file();
        let err = |e: ort::Error| ModelError::run(&file, e);
        // Buffers that last, from the decoder's arena: see `graph`.
        self.retire_graph();
        self.allocator()?;
        let allocator = self.allocator.as_ref().expect("made above");
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
        let mut outputs = Vec::with_capacity(2 * layers);
        for (k, v) in into.iter_mut() {
            // SAFETY: `into` outlives the views, which `run_gather` drops with its
            // binding when the run is over; the rows they cover are the admitted ones,
            // which no other run touches until it returns.
            unsafe {
                outputs.push(tensor::rows_view(k, &self.memory, offset, &view).map_err(err)?);
                outputs.push(tensor::rows_view(v, &self.memory, offset, &view).map_err(err)?);
            }
        }
        // Every layer in one run, written in place.
        let tensors = by_tensor(sources, 0..layers);
        self.run_gather(&tensors, &plan, Some(outputs), true)?;
        Ok(())
    }

    /// `capacity` rounded up to [`CAPACITY_STEP`], but not past the model's positions
    /// (GroupQueryAttention's rotary tables may be no longer).
    pub fn slot_capacity(&self, capacity: usize) -> usize {
        let most = self.manifest.decoder.max_length + 1;
        capacity
            .next_multiple_of(CAPACITY_STEP)
            .min(most)
            .max(capacity)
    }

    /// `kept` if it has at least `capacity` positions a slot and `least` slots
    /// (however many slots it has); otherwise it is dropped and `slots` slots of
    /// `capacity` positions allocated. Returns the pool and whether it is new.
    pub fn slot_pool(
        &mut self,
        kept: Option<SlotPool>,
        capacity: usize,
        least: usize,
        slots: usize,
    ) -> Result<(SlotPool, bool), ModelError> {
        if let Some(p) = kept {
            if p.capacity >= capacity && p.slots >= least {
                return Ok((p, false));
            }
        }
        let pool = SlotPool {
            cache: self.alloc_cache(slots, capacity)?,
            slots,
            capacity,
        };
        Ok((pool, true))
    }

    /// Gathers row `b` of `presents` into slot `s` of `into` for each `(s, b)` of
    /// `placed` (slots ascending): one gather per run of consecutive slots.
    pub fn gather_into_slots(
        &mut self,
        presents: Cache,
        placed: &[(usize, usize)],
        into: &mut Cache,
    ) -> Result<(), ModelError> {
        let sources = [presents];
        let mut start = 0;
        while start < placed.len() {
            let mut end = start + 1;
            while end < placed.len() && placed[end].0 == placed[end - 1].0 + 1 {
                end += 1;
            }
            let picks: Vec<(usize, usize)> =
                placed[start..end].iter().map(|&(_, b)| (0, b)).collect();
            self.gather_into(&sources, &picks, into, placed[start].0)?;
            start = end;
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

    /// One layer's key and value rows gathered on the host ([`KvMode::Host`]).
    fn gather_host(
        &self,
        layer: &[&(DynValue, DynValue)],
        picks: &[(usize, usize)],
        len: usize,
    ) -> Result<(DynValue, DynValue), ModelError> {
        let file = self.decoder_file();
        let err = |e: String| ModelError::run(&file, e);
        let keys: Vec<&DynValue> = layer.iter().map(|s| &s.0).collect();
        let values: Vec<&DynValue> = layer.iter().map(|s| &s.1).collect();
        Ok((
            tensor::gather_cache(&keys, picks, len).map_err(err)?,
            tensor::gather_cache(&values, picks, len).map_err(err)?,
        ))
    }

    /// Runs the gather graph over `tensors` (each with one entry per source); its
    /// outputs go to `into` when given (views of rows of larger caches, nothing
    /// returned), else to new device tensors. `last`: on CUDA, the run hands the
    /// arena's free regions back to the device.
    fn run_gather(
        &mut self,
        tensors: &[Vec<&DynValue>],
        plan: &Plan,
        into: Option<Vec<tensor::RowsView>>,
        last: bool,
    ) -> Result<Vec<DynValue>, ModelError> {
        let file = self.decoder_file();
        let err = |e: String| ModelError::run(&file, e);
        let sources = plan.pads.len();
        let key = OpKey::Gather {
            ty: self.cache_type,
            tensors: tensors.len(),
            sources,
        };
        let memory = self.memory.clone();
        let shrink = self.shrink.clone().filter(|_| last);
        let session = self.op(key)?;
        let oe = |e: ort::Error| ModelError::run(&file, e);
        let mut binding = session.create_binding().map_err(oe)?;
        for (t, per_source) in tensors.iter().enumerate() {
            for (s, x) in per_source.iter().enumerate() {
                binding
                    .bind_input(ops::gather_input(t, s), *x)
                    .map_err(oe)?;
            }
        }
        for (s, pads) in plan.pads.iter().enumerate() {
            let p = tensor::ints(vec![8], pads.clone()).map_err(err)?;
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
                for t in 0..tensors.len() {
                    binding
                        .bind_output_to_device(ops::gather_output(t), &memory)
                        .map_err(oe)?;
                }
            }
        }
        let mut outputs = {
            let _guard = run_guard();
            match &shrink {
                Some(options) => session.run_binding_with_options(&binding, options),
                None => session.run_binding(&binding),
            }
        }
        .map_err(oe)?;
        if bound {
            return Ok(Vec::new());
        }
        (0..tensors.len())
            .map(|t| {
                outputs
                    .remove(ops::gather_output(t))
                    .ok_or_else(|| err("the gather graph returned too little".into()))
            })
            .collect()
    }
}

/// The key and value tensors of `layers` of every source, in the gather graph's
/// order: per layer its keys, then its values, each with one entry per source.
fn by_tensor(sources: &[Cache], layers: std::ops::Range<usize>) -> Vec<Vec<&DynValue>> {
    layers
        .flat_map(|l| {
            [
                sources.iter().map(|s| &s[l].0).collect(),
                sources.iter().map(|s| &s[l].1).collect(),
            ]
        })
        .collect()
}

/// Gather outputs in key, value order as one cache entry per layer.
fn pairs(outputs: Vec<DynValue>, file: &str) -> Result<Cache, ModelError> {
    if !outputs.len().is_multiple_of(2) {
        return Err(ModelError::run(file, "an odd number of gathered tensors"));
    }
    let mut it = outputs.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}
