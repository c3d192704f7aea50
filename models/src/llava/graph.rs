//! Decode steps over shared row-slot buffers as CUDA graphs (on CUDA unless
//! `TSST_CUDA_GRAPHS=0`).
//!
//! A step of a 7B decoder is ~470 kernels; launched one by one they leave the GPU
//! idle about 1 ms a step (7B, H100: bench/RESULTS.md). ONNX Runtime's CUDA provider
//! can capture a run as a CUDA graph and replay it with one launch, if every run
//! under that graph id binds the same device addresses with the same shapes. So a
//! graph binds once, and every step reuses:
//! - the slot buffers (`[slots, kv_heads, capacity, head_dim]`, past and present);
//! - embeddings `[slots, 1, hidden]`, which embed.onnx writes straight into a buffer
//!   of the graph's own each step, and a mask `[slots, capacity]` copied into another
//!   (as wide as the buffers: each row's ones, then zeros; GroupQueryAttention takes
//!   each row's length from the mask);
//! - logits `[slots, 1, vocab]` into a buffer of its own, sampled from there.
//!
//! One graph is live per model: a new set of slot buffers (a new pool) gets a new
//! graph id and the old one is never replayed. The captured graph keeps writing its
//! intermediate tensors where the capture put them, inside the decoder's arena. So,
//! while graphs are on, the decoder's runs never shrink its arena (which could hand
//! those regions back to the device), and any buffer allocated to last from that
//! arena ([`Llava::alloc_cache`]) retires the live graph first. What other runs
//! take from the arena between two steps is theirs only until they return.
use super::decode::bind_pasts;
use super::*;
use crate::device::{capture_guard, run_guard};
use crate::ms_since;
use ort::session::{IoBinding, RunOptions};
use ort::value::{DynTensor, DynTensorValueType};
use std::time::Instant;

/// ONNX Runtime's CUDA provider captures on a graph id's third run (two plain runs
/// first, to size its arena); the runs up to the capture hold the process's run lock
/// alone.
const RUNS_TO_CAPTURE: u32 = 3;

/// The decoder's graphs: the next id to give, the live one.
#[derive(Default)]
pub struct Graphs {
    next_id: i32,
    live: Option<Graph>,
}

impl Graphs {
    /// Retires the live graph: never replayed again.
    pub fn retire(&mut self) {
        self.live = None;
    }
}

/// One captured (or being captured) step: the buffers it binds.
struct Graph {
    /// The thread that runs it: ONNX Runtime keeps graphs per thread.
    thread: std::thread::ThreadId,
    /// Addresses of the slot buffers, in binding order.
    slots: Vec<usize>,
    rows: usize,
    capacity: usize,
    embeds: DynTensor,
    mask: DynTensor,
    logits: DynTensor,
    /// Bound once: these buffers and the slots, every step the same.
    binding: IoBinding,
    runs: u32,
    options: RunOptions,
}

/// Run options for the decoder's runs under graph `id`; `-1`: outside any graph.
pub fn graph_options(id: i32) -> Result<RunOptions, ort::Error> {
    let mut options = RunOptions::new()?;
    options.set("gpu_graph_id", id.to_string())?;
    Ok(options)
}

fn address(value: &DynValue) -> Result<usize, String> {
    let tensor = value
        .view()
        .downcast::<DynTensorValueType>()
        .map_err(|e| e.to_string())?;
    Ok(tensor.data_ptr() as usize)
}

/// A `[rows, width]` mask as `[rows, capacity]`: each row's values, then zeros.
fn widen(mask: &[i64], rows: usize, capacity: usize) -> Vec<i64> {
    let width = mask.len().checked_div(rows).unwrap_or(0);
    let mut wide = vec![0i64; rows * capacity];
    for (r, row) in mask.chunks(width.max(1)).enumerate().take(rows) {
        wide[r * capacity..r * capacity + row.len()].copy_from_slice(row);
    }
    wide
}

impl Llava {
    /// Retires the live graph, if any, with the references it holds to slot buffers.
    pub fn retire_graph(&mut self) {
        if let Some(graphs) = self.graphs.as_mut() {
            graphs.retire();
        }
    }

    /// Whether this model's decode steps over shared buffers run as CUDA graphs.
    pub fn graphs_on(&self) -> bool {
        self.graphs.is_some()
    }

    /// A [`KvMode::Shared`] step as a graph replay: `ids` one token per row, `mask`
    /// `[rows, width]` with `width` at most the buffers' capacity; it samples.
    pub(super) fn decode_graph(
        &mut self,
        rows: usize,
        ids: Vec<i64>,
        mask: Vec<i64>,
        mut past: Cache,
        temperature: &[f32],
        uniform: &[f32],
    ) -> Result<DecoderOutput, ModelError> {
        let began = Instant::now();
        let file = self.decoder_file();
        let err = |e: String| ModelError::run(&file, e);
        let ort_err = |e: ort::Error| ModelError::run(&file, e);
        let (k0, _) = past
            .first()
            .ok_or_else(|| err("a decode step without caches".into()))?;
        let shape = tensor::shape(k0).map_err(err)?;
        let capacity = shape.get(2).copied().unwrap_or(0) as usize;
        let width = mask.len().checked_div(rows).unwrap_or(0);
        if shape.first() != Some(&(rows as i64)) || width > capacity || ids.len() != rows {
            return Err(err(format!(
                "a graph step of {} ids, {rows} rows and mask width {width} over buffers {shape:?}",
                ids.len()
            )));
        }
        let mut slots = Vec::with_capacity(past.len() * 2);
        for (k, v) in &past {
            slots.push(address(k).map_err(err)?);
            slots.push(address(v).map_err(err)?);
        }
        let thread = std::thread::current().id();
        let mut graphs = self.graphs.take().expect("decode_graph with graphs on");
        let reuse = graphs.live.take().filter(|g| {
            g.thread == thread && g.slots == slots && g.rows == rows && g.capacity == capacity
        });
        let graph = match reuse {
            Some(g) => Ok(g),
            None => {
                let id = graphs.next_id;
                graphs.next_id += 1;
                self.new_graph(id, thread, slots, rows, capacity, &mut past)
            }
        };
        self.graphs = Some(graphs);
        let mut graph = graph?;
        let bound = Instant::now();
        let wide = widen(&mask, rows, capacity);
        let host_mask =
            tensor::int_tensor(self.mask_type, vec![rows as i64, capacity as i64], wide)
                .map_err(err)?
                .downcast::<DynTensorValueType>()
                .map_err(ort_err)?;
        // Outside the run lock: a capture below holds it alone, and the lock is not
        // taken twice on one thread.
        self.embed_into(ids, &mut graph.embeds)?;
        {
            // A copy is a session run too: none may overlap another thread's capture.
            let _guard = run_guard();
            host_mask.copy_into(&mut graph.mask).map_err(ort_err)?;
        }
        let ran = Instant::now();
        let result = {
            let _guard = if graph.runs < RUNS_TO_CAPTURE {
                Err(capture_guard())
            } else {
                Ok(run_guard())
            };
            self.decoder
                .run_binding_with_options(&graph.binding, &graph.options)
                .map(drop)
                .map_err(ort_err)
        };
        graph.runs += 1;
        if let Err(e) = result {
            // Not knowing what a failed capture or replay leaves behind, the model
            // stops using graphs; its caller decodes the batch again without.
            tracing::warn!(error = %e, "a CUDA graph step failed; decoding without graphs from now on");
            self.graphs = None;
            return Err(e);
        }
        let sampled = Instant::now();
        let choices = {
            let logits = graph.logits.view().into_dyn();
            self.sample(&logits, temperature, uniform)
        };
        let between = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        let t = &mut self.step_times;
        t.bind_ms += between(began, bound);
        t.inputs_ms += between(bound, ran);
        t.run_ms += between(ran, sampled);
        t.sample_ms += ms_since(sampled);
        t.steps += 1;
        if let Some(graphs) = self.graphs.as_mut() {
            graphs.live = Some(graph);
        }
        Ok(DecoderOutput {
            picked: Vec::new(),
            choices: choices?,
            presents: past,
        })
    }

    /// A graph's own buffers, from the decoder's allocator, and its binding: the same
    /// buffers every step, so bound once.
    fn new_graph(
        &mut self,
        id: i32,
        thread: std::thread::ThreadId,
        slots: Vec<usize>,
        rows: usize,
        capacity: usize,
        past: &mut Cache,
    ) -> Result<Graph, ModelError> {
        let file = self.decoder_file();
        let err = |e: ort::Error| ModelError::run(&file, e);
        self.allocator()?;
        let allocator = self.allocator.as_ref().expect("made above");
        let d = &self.manifest.decoder;
        let logits_name = d.logits.as_deref().unwrap_or("");
        let logits_type = tensor::output_type(&self.decoder, logits_name)
            .map_err(|e| ModelError::run(&file, e))?;
        let new = |ty, shape: Vec<i64>| DynTensor::new(allocator, ty, shape);
        let embeds =
            new(self.embeds_type, vec![rows as i64, 1, d.hidden_size as i64]).map_err(err)?;
        let mask = new(self.mask_type, vec![rows as i64, capacity as i64]).map_err(err)?;
        let mut logits =
            new(logits_type, vec![rows as i64, 1, d.vocab_size as i64]).map_err(err)?;
        let mut binding = self.decoder.create_binding().map_err(err)?;
        binding
            .bind_input(d.inputs_embeds.as_str(), &embeds)
            .map_err(err)?;
        binding
            .bind_input(d.attention_mask.as_str(), &mask)
            .map_err(err)?;
        bind_pasts(d, &mut binding, past, true).map_err(err)?;
        binding.bind_output(logits_name, &mut logits).map_err(err)?;
        // The binding keeps its own references to what it binds (the slots too, until
        // the graph is retired); each step writes `embeds` and `mask` and reads `logits`
        // in place.
        let graph = Graph {
            thread,
            slots,
            rows,
            capacity,
            embeds,
            mask,
            logits,
            binding,
            runs: 0,
            options: graph_options(id).map_err(err)?,
        };
        tracing::debug!(id, rows, capacity, "a new CUDA graph for the decode step");
        Ok(graph)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_widen_to_the_capacity_row_by_row() {
        let mask = [1, 1, 0, 1, 1, 1];
        assert_eq!(widen(&mask, 2, 5), vec![1, 1, 0, 0, 0, 1, 1, 1, 0, 0]);
        assert_eq!(widen(&mask, 2, 3), vec![1, 1, 0, 1, 1, 1]);
    }
}
