//! Small ONNX graphs built in memory that move cache and output tensors where they
//! live (on the GPU under CUDA), so that key/value caches never pass through host
//! memory between decoder runs:
//! - [`gather_graph`]: per cache tensor, pad each source's length axis to one length,
//!   concatenate the sources along the batch axis and pick rows (fork a prompt's cache
//!   for its samples, merge prefill chunks, drop finished rows, widen into a shared
//!   buffer);
//! - [`pick_graph`]: rows `(b, t)` of a `[batch, seq, width]` tensor, cast to float32
//!   (the logits or hidden states the value head or host-side sampling needs);
//! - [`sample_graph`]: the next token of each row chosen on the device from its logits
//!   (greedy or temperature sampling with a uniform draw from the host), with its
//!   log-probability: 12 bytes per row cross to the host instead of the vocabulary.
//!
//! The graphs are written as ONNX protobuf by hand (a few message types, no
//! dependency) and opened like the model's own files.
use ort::value::TensorElementType;

/// Opset of the generated graphs (Pad takes its pads as an input since 11).
const OPSET: i64 = 17;
const IR_VERSION: i64 = 8;

/// ONNX `TensorProto.DataType` codes.
fn onnx_type(ty: TensorElementType) -> Result<i64, String> {
    match ty {
        TensorElementType::Float32 => Ok(1),
        TensorElementType::Float16 => Ok(10),
        TensorElementType::Int64 => Ok(7),
        other => Err(format!("no ONNX graph for element type {other:?}")),
    }
}

/// A protobuf message being written.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(byte);
                return;
            }
            self.0.push(byte | 0x80);
        }
    }
    fn key(&mut self, field: u32, wire: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire));
    }
    fn int(&mut self, field: u32, v: i64) -> &mut Self {
        self.key(field, 0);
        self.varint(v as u64);
        self
    }
    fn bytes(&mut self, field: u32, b: &[u8]) -> &mut Self {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    fn str(&mut self, field: u32, s: &str) -> &mut Self {
        self.bytes(field, s.as_bytes())
    }
    fn msg(&mut self, field: u32, m: &Msg) -> &mut Self {
        self.bytes(field, &m.0)
    }
}

/// `ValueInfoProto`: a tensor of element type `ty`, shape left open.
fn value_info(name: &str, ty: i64) -> Msg {
    let mut tensor = Msg::default();
    tensor.int(1, ty);
    let mut type_proto = Msg::default();
    type_proto.msg(1, &tensor);
    let mut info = Msg::default();
    info.str(1, name).msg(2, &type_proto);
    info
}

/// `NodeProto` with integer attributes; an attribute named `axes` is written as a list
/// of one integer (INTS), as the opset-17 reductions that take it as an attribute want.
fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str], attrs: &[(&str, i64)]) -> Msg {
    let mut n = Msg::default();
    for i in inputs {
        n.str(1, i);
    }
    for o in outputs {
        n.str(2, o);
    }
    n.str(3, name).str(4, op);
    for (key, value) in attrs {
        let mut a = Msg::default();
        a.str(1, key);
        if *key == "axes" {
            a.int(8, *value).int(20, 7); // AttributeProto.ints, type INTS
        } else {
            a.int(3, *value).int(20, 2); // AttributeProto.i, type INT
        }
        n.msg(5, &a);
    }
    n
}

/// A `Constant` node holding an int64 (`ints`) or float32 (`floats`) tensor of shape
/// `dims`.
fn constant(name: &str, dims: &[i64], ints: &[i64], floats: &[f32]) -> Msg {
    let mut t = Msg::default();
    for d in dims {
        t.int(1, *d);
    }
    let mut raw = Vec::new();
    if floats.is_empty() {
        t.int(2, 7);
        for v in ints {
            raw.extend_from_slice(&v.to_le_bytes());
        }
    } else {
        t.int(2, 1);
        for v in floats {
            raw.extend_from_slice(&v.to_le_bytes());
        }
    }
    t.str(8, name).bytes(9, &raw);
    let mut a = Msg::default();
    a.str(1, "value").msg(5, &t).int(20, 4); // AttributeProto.type TENSOR
    let mut n = Msg::default();
    n.str(2, name).str(3, name).str(4, "Constant").msg(5, &a);
    n
}

fn model(graph: &Msg) -> Vec<u8> {
    let mut opset = Msg::default();
    opset.str(1, "").int(2, OPSET);
    let mut m = Msg::default();
    m.int(1, IR_VERSION)
        .str(2, "tsst-models")
        .msg(7, graph)
        .msg(8, &opset);
    m.0
}

/// Input names of [`gather_graph`].
pub fn gather_input(tensor: usize, source: usize) -> String {
    format!("x{tensor}_{source}")
}
pub fn gather_pads(source: usize) -> String {
    format!("pads{source}")
}
pub const GATHER_INDEX: &str = "idx";
pub fn gather_output(tensor: usize) -> String {
    format!("y{tensor}")
}

/// For each of `tensors` cache tensors `[batch_s, heads, len_s, dim]` given by
/// `sources` sources: pad source `s` with `pads{s}` (int64 `[8]`, zeros appended on
/// the length axis), concatenate the sources along the batch axis and take the rows
/// `idx` (int64 `[n]`). Outputs `y{t}` `[n, heads, len, dim]`.
pub fn gather_graph(
    ty: TensorElementType,
    tensors: usize,
    sources: usize,
) -> Result<Vec<u8>, String> {
    let ty = onnx_type(ty)?;
    let mut g = Msg::default();
    for t in 0..tensors {
        let padded: Vec<String> = (0..sources).map(|s| format!("p{t}_{s}")).collect();
        for (s, p) in padded.iter().enumerate() {
            let x = gather_input(t, s);
            let pads = gather_pads(s);
            g.msg(1, &node("Pad", p, &[&x, &pads], &[p], &[]));
        }
        let y = gather_output(t);
        let joined = if sources == 1 {
            padded[0].clone()
        } else {
            let c = format!("c{t}");
            let refs: Vec<&str> = padded.iter().map(String::as_str).collect();
            g.msg(1, &node("Concat", &c, &refs, &[&c], &[("axis", 0)]));
            c
        };
        g.msg(
            1,
            &node(
                "Gather",
                &y,
                &[&joined, GATHER_INDEX],
                &[&y],
                &[("axis", 0)],
            ),
        );
    }
    g.str(2, "tsst_gather_cache");
    for t in 0..tensors {
        for s in 0..sources {
            g.msg(11, &value_info(&gather_input(t, s), ty));
        }
    }
    for s in 0..sources {
        g.msg(11, &value_info(&gather_pads(s), 7));
    }
    g.msg(11, &value_info(GATHER_INDEX, 7));
    for t in 0..tensors {
        g.msg(12, &value_info(&gather_output(t), ty));
    }
    Ok(model(&g))
}

pub const PICK_INPUT: &str = "x";
pub const PICK_INDEX: &str = "idx";
pub const PICK_OUTPUT: &str = "y";

/// `x` `[batch, seq, width]` → `y` float32 `[n, width]`: rows `idx` (int64 `[n]`,
/// `b * seq + t`) of `x` flattened to `[batch * seq, width]`.
pub fn pick_graph(ty: TensorElementType) -> Result<Vec<u8>, String> {
    let ty = onnx_type(ty)?;
    let mut g = Msg::default();
    g.msg(
        1,
        &node("Flatten", "flat", &[PICK_INPUT], &["flat"], &[("axis", 2)]),
    );
    g.msg(
        1,
        &node(
            "Gather",
            "rows",
            &["flat", PICK_INDEX],
            &["rows"],
            &[("axis", 0)],
        ),
    );
    g.msg(
        1,
        &node("Cast", PICK_OUTPUT, &["rows"], &[PICK_OUTPUT], &[("to", 1)]),
    );
    g.str(2, "tsst_pick_rows");
    g.msg(11, &value_info(PICK_INPUT, ty));
    g.msg(11, &value_info(PICK_INDEX, 7));
    g.msg(12, &value_info(PICK_OUTPUT, 1));
    Ok(model(&g))
}

/// Block length of the sample graph's two-level cumulative sum. ONNX Runtime's CUDA
/// CumSum costs O(n) per element along the axis (O(n^2) per row): over a 32k
/// vocabulary one scan took 0.4 ms at batch 1 and 5 ms at batch 64 on an H100, so
/// the weights are summed per block of this many entries, the block sums scanned, and
/// then the one block holding the draw.
pub const SAMPLE_BLOCK: usize = 256;

pub const SAMPLE_LOGITS: &str = "logits";
pub const SAMPLE_INV_TEMPERATURE: &str = "inv_temperature";
pub const SAMPLE_HOT: &str = "hot";
pub const SAMPLE_UNIFORM: &str = "uniform";
pub const SAMPLE_ROW_BASE: &str = "row_base";
pub const SAMPLE_TOKEN: &str = "token";
pub const SAMPLE_LOGPROB: &str = "logprob";

/// Blocks per row of [`sample_graph`] for a vocabulary.
pub fn sample_blocks(vocab: usize) -> usize {
    vocab.div_ceil(SAMPLE_BLOCK)
}

/// The next token of each row from `logits` `[batch, 1, vocab]` (float32 or float16),
/// what `sampling::choose` computes on the host, in float32. Outputs `token` int64
/// `[batch, 1]` and `logprob` float32 `[batch, 1]` = `x[token] - logsumexp(x)` (at
/// temperature 1).
///
/// `greedy`: the graph takes the logits only and returns the first maximum (10 nodes).
/// Otherwise it also takes, all `[batch, 1]`: `hot` (bool: sample this row, else
/// greedy), `inv_temperature` (float32, 1 / T), `uniform` (float32 in [0, 1)) and
/// `row_base` (int64, `b * sample_blocks(vocab)`), and a hot row takes the first index
/// whose cumulative weight `exp((x - max) / T)` exceeds `uniform * total` (inverse CDF
/// in index order, as `choose` walks the weights), found block by block. Float32 sums
/// differ from the host's float64 ones in the last bits: a draw that close to a
/// boundary between two tokens may pick the other one. Everything but the batch is
/// fixed when the graph is built, so no shape arithmetic runs at all.
pub fn sample_graph(ty: TensorElementType, vocab: usize, greedy: bool) -> Result<Vec<u8>, String> {
    let ty = onnx_type(ty)?;
    if vocab == 0 {
        return Err("an empty vocabulary".into());
    }
    let k = SAMPLE_BLOCK as i64;
    let r = sample_blocks(vocab) as i64;
    let pad = r * k - vocab as i64;
    let mut g = Msg::default();
    let mut add = |n: Msg| {
        g.msg(1, &n);
    };
    add(constant("axes1", &[1], &[1], &[]));
    add(node(
        "Flatten",
        "flat",
        &[SAMPLE_LOGITS],
        &["flat"],
        &[("axis", 2)],
    ));
    add(node("Cast", "x", &["flat"], &["x"], &[("to", 1)]));
    // The row maximum as the value at the first maximum's index: ONNX Runtime's CUDA
    // ReduceMax over [rows >= 2, 32064] took 1.7 ms where ArgMax took 0.02 ms (H100,
    // bench/gpu/reduce_probe.py), a sixth of a 7B decode step at batch 16.
    let greedy_out = if greedy { SAMPLE_TOKEN } else { "greedy" };
    add(node(
        "ArgMax",
        greedy_out,
        &["x"],
        &[greedy_out],
        &[("axis", 1), ("keepdims", 1), ("select_last_index", 0)],
    ));
    add(node(
        "GatherElements",
        "mx",
        &["x", greedy_out],
        &["mx"],
        &[("axis", 1)],
    ));
    add(node("Sub", "sh", &["x", "mx"], &["sh"], &[]));
    add(node("Exp", "e1", &["sh"], &["e1"], &[]));
    add(node(
        "ReduceSum",
        "s1",
        &["e1", "axes1"],
        &["s1"],
        &[("keepdims", 1)],
    ));
    add(node("Log", "lse", &["s1"], &["lse"], &[]));
    if !greedy {
        add(constant("axis1", &[], &[1], &[]));
        add(constant("axes2", &[1], &[2], &[]));
        add(constant("blocks_shape", &[3], &[0, r, k], &[]));
        add(constant("rows_shape", &[2], &[-1, k], &[]));
        add(constant("last_start", &[1], &[-1], &[]));
        add(constant("last_end", &[1], &[i64::MAX], &[]));
        add(constant("block", &[], &[k], &[]));
        add(constant("block_last", &[], &[k - 1], &[]));
        add(constant("blocks_last", &[], &[r - 1], &[]));
        add(constant("vocab_last", &[], &[vocab as i64 - 1], &[]));
        add(node(
            "Mul",
            "z",
            &["sh", SAMPLE_INV_TEMPERATURE],
            &["z"],
            &[],
        ));
        add(node("Exp", "w", &["z"], &["w"], &[]));
        // Weights padded with zeros to whole blocks, `[batch, R, K]`.
        let padded = if pad > 0 {
            add(constant("pads", &[4], &[0, 0, 0, pad], &[]));
            add(node("Pad", "wp", &["w", "pads"], &["wp"], &[]));
            "wp"
        } else {
            "w"
        };
        add(node(
            "Reshape",
            "blocks",
            &[padded, "blocks_shape"],
            &["blocks"],
            &[],
        ));
        // The block holding the draw, and the weight before it.
        add(node(
            "ReduceSum",
            "bsum",
            &["blocks", "axes2"],
            &["bsum"],
            &[("keepdims", 0)],
        ));
        add(node("CumSum", "bcum", &["bsum", "axis1"], &["bcum"], &[]));
        add(node(
            "Slice",
            "total",
            &["bcum", "last_start", "last_end", "axes1"],
            &["total"],
            &[],
        ));
        add(node(
            "Mul",
            "target",
            &[SAMPLE_UNIFORM, "total"],
            &["target"],
            &[],
        ));
        add(node(
            "LessOrEqual",
            "bbelow",
            &["bcum", "target"],
            &["bbelow"],
            &[],
        ));
        add(node(
            "Cast",
            "bbelow_i",
            &["bbelow"],
            &["bbelow_i"],
            &[("to", 7)],
        ));
        add(node(
            "ReduceSum",
            "jb0",
            &["bbelow_i", "axes1"],
            &["jb0"],
            &[("keepdims", 1)],
        ));
        add(node("Min", "jb", &["jb0", "blocks_last"], &["jb"], &[]));
        add(node(
            "GatherElements",
            "bcj",
            &["bcum", "jb"],
            &["bcj"],
            &[("axis", 1)],
        ));
        add(node(
            "GatherElements",
            "bsj",
            &["bsum", "jb"],
            &["bsj"],
            &[("axis", 1)],
        ));
        add(node("Sub", "offset", &["bcj", "bsj"], &["offset"], &[]));
        // The index inside that block.
        add(node("Add", "row", &[SAMPLE_ROW_BASE, "jb"], &["row"], &[]));
        add(node("Squeeze", "row1", &["row", "axes1"], &["row1"], &[]));
        add(node(
            "Reshape",
            "rows",
            &["blocks", "rows_shape"],
            &["rows"],
            &[],
        ));
        add(node(
            "Gather",
            "inblk",
            &["rows", "row1"],
            &["inblk"],
            &[("axis", 0)],
        ));
        add(node("CumSum", "icum", &["inblk", "axis1"], &["icum"], &[]));
        add(node(
            "Sub",
            "itarget",
            &["target", "offset"],
            &["itarget"],
            &[],
        ));
        add(node(
            "LessOrEqual",
            "ibelow",
            &["icum", "itarget"],
            &["ibelow"],
            &[],
        ));
        add(node(
            "Cast",
            "ibelow_i",
            &["ibelow"],
            &["ibelow_i"],
            &[("to", 7)],
        ));
        add(node(
            "ReduceSum",
            "jin0",
            &["ibelow_i", "axes1"],
            &["jin0"],
            &[("keepdims", 1)],
        ));
        add(node("Min", "jin", &["jin0", "block_last"], &["jin"], &[]));
        add(node("Mul", "base", &["jb", "block"], &["base"], &[]));
        add(node("Add", "drawn0", &["base", "jin"], &["drawn0"], &[]));
        add(node(
            "Min",
            "drawn",
            &["drawn0", "vocab_last"],
            &["drawn"],
            &[],
        ));
        add(node(
            "Where",
            SAMPLE_TOKEN,
            &[SAMPLE_HOT, "drawn", "greedy"],
            &[SAMPLE_TOKEN],
            &[],
        ));
    }
    add(node(
        "GatherElements",
        "xt",
        &["sh", SAMPLE_TOKEN],
        &["xt"],
        &[("axis", 1)],
    ));
    add(node(
        "Sub",
        SAMPLE_LOGPROB,
        &["xt", "lse"],
        &[SAMPLE_LOGPROB],
        &[],
    ));
    g.str(2, "tsst_sample");
    g.msg(11, &value_info(SAMPLE_LOGITS, ty));
    if !greedy {
        g.msg(11, &value_info(SAMPLE_HOT, 9));
        g.msg(11, &value_info(SAMPLE_INV_TEMPERATURE, 1));
        g.msg(11, &value_info(SAMPLE_UNIFORM, 1));
        g.msg(11, &value_info(SAMPLE_ROW_BASE, 7));
    }
    g.msg(12, &value_info(SAMPLE_TOKEN, 7));
    g.msg(12, &value_info(SAMPLE_LOGPROB, 1));
    Ok(model(&g))
}

/// The inputs of the sampling [`sample_graph`] besides the logits, for rows with these
/// temperatures and uniform draws; `None` when every row is greedy (use the greedy
/// graph, which takes the logits only).
pub fn sample_inputs(
    temperature: &[f32],
    uniform: &[f32],
    vocab: usize,
) -> Result<Option<Vec<(&'static str, ort::value::DynValue)>>, String> {
    use ort::value::{DynValue, Tensor};
    if temperature.iter().all(|&t| t <= 0.0) {
        return Ok(None);
    }
    let rows = temperature.len() as i64;
    let err = |e: ort::Error| e.to_string();
    let hot: Vec<bool> = temperature.iter().map(|&t| t > 0.0).collect();
    let inv: Vec<f32> = temperature.iter().map(|&t| 1.0 / t.max(1e-6)).collect();
    // A draw rounded up to 1.0 in float32 would pick past the vocabulary.
    let below_one: Vec<f32> = uniform
        .iter()
        .map(|&u| u.clamp(0.0, 0.999_999_94))
        .collect();
    let blocks = sample_blocks(vocab) as i64;
    let base: Vec<i64> = (0..rows).map(|b| b * blocks).collect();
    Ok(Some(vec![
        (
            SAMPLE_HOT,
            DynValue::from(Tensor::from_array((vec![rows, 1], hot)).map_err(err)?),
        ),
        (
            SAMPLE_INV_TEMPERATURE,
            DynValue::from(Tensor::from_array((vec![rows, 1], inv)).map_err(err)?),
        ),
        (
            SAMPLE_UNIFORM,
            DynValue::from(Tensor::from_array((vec![rows, 1], below_one)).map_err(err)?),
        ),
        (
            SAMPLE_ROW_BASE,
            DynValue::from(Tensor::from_array((vec![rows, 1], base)).map_err(err)?),
        ),
    ]))
}

/// The `pads` input of [`gather_graph`] for a rank-4 cache: `extra` zero positions
/// after the end of the length axis, or with `extra < 0` that many positions cut
/// from its end (ONNX Pad crops where a pad is negative).
pub fn length_pads(extra: i64) -> Vec<i64> {
    vec![0, 0, 0, 0, 0, 0, extra, 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_encode_like_protobuf() {
        let mut m = Msg::default();
        m.varint(300);
        assert_eq!(m.0, vec![0xac, 0x02]);
        let mut m = Msg::default();
        m.int(1, -1);
        assert_eq!(m.0.len(), 11, "negative int64 takes ten bytes");
    }

    #[test]
    fn graphs_build_for_float_types() {
        assert!(gather_graph(TensorElementType::Float16, 4, 2).is_ok());
        assert!(pick_graph(TensorElementType::Float32).is_ok());
        assert!(sample_graph(TensorElementType::Float16, 32064, false).is_ok());
        assert!(sample_graph(TensorElementType::Float32, 512, true).is_ok());
        assert!(pick_graph(TensorElementType::Bool).is_err());
    }
}
