//! Building input tensors and reading outputs, for float32 and float16 models alike:
//! the rest of the crate works in f32 and converts at the session boundary.
use half::{f16, slice::HalfFloatSliceExt};
use ort::session::Session;
use ort::value::{DynValue, Outlet, Tensor, TensorElementType};

pub type TensorResult<T> = Result<T, String>;

/// The element type a session input takes.
pub fn input_type(session: &Session, name: &str) -> TensorResult<TensorElementType> {
    outlet_type(session.inputs(), "input", name)
}

/// The element type a session output has.
pub fn output_type(session: &Session, name: &str) -> TensorResult<TensorElementType> {
    outlet_type(session.outputs(), "output", name)
}

fn outlet_type(outlets: &[Outlet], what: &str, name: &str) -> TensorResult<TensorElementType> {
    let outlet = outlets
        .iter()
        .find(|o| o.name() == name)
        .ok_or_else(|| format!("the model has no {what} `{name}`"))?;
    outlet
        .dtype()
        .tensor_type()
        .ok_or_else(|| format!("{what} `{name}` is not a tensor"))
}

/// Input names the session declares, to check that every one is fed.
pub fn input_names(session: &Session) -> Vec<String> {
    session
        .inputs()
        .iter()
        .map(|o| o.name().to_string())
        .collect()
}

pub fn floats(ty: TensorElementType, shape: Vec<i64>, data: Vec<f32>) -> TensorResult<DynValue> {
    match ty {
        TensorElementType::Float32 => Tensor::from_array((shape, data))
            .map(Into::into)
            .map_err(|e| e.to_string()),
        TensorElementType::Float16 => {
            // The slice conversion runs 8 values an instruction where the CPU has F16C
            // (a 7B prompt's embeddings are ~4 M values).
            let mut half = vec![f16::ZERO; data.len()];
            half.convert_from_f32_slice(&data);
            Tensor::from_array((shape, half))
                .map(Into::into)
                .map_err(|e| e.to_string())
        }
        other => Err(format!("expected a float input, the model takes {other:?}")),
    }
}

pub fn ints(shape: Vec<i64>, data: Vec<i64>) -> TensorResult<DynValue> {
    Tensor::from_array((shape, data))
        .map(Into::into)
        .map_err(|e| e.to_string())
}

/// An int64 or int32 tensor (attention masks: the genai builder may declare either).
pub fn int_tensor(
    ty: TensorElementType,
    shape: Vec<i64>,
    data: Vec<i64>,
) -> TensorResult<DynValue> {
    match ty {
        TensorElementType::Int64 => ints(shape, data),
        TensorElementType::Int32 => {
            let data: Vec<i32> = data.into_iter().map(|v| v as i32).collect();
            Tensor::from_array((shape, data))
                .map(Into::into)
                .map_err(|e| e.to_string())
        }
        other => Err(format!(
            "expected an integer input, the model takes {other:?}"
        )),
    }
}

/// The shape of a tensor value.
pub fn shape(value: &DynValue) -> TensorResult<Vec<i64>> {
    value
        .dtype()
        .tensor_shape()
        .map(|s| s.to_vec())
        .ok_or_else(|| "output is not a tensor".to_string())
}

/// A float tensor's shape and data as f32.
pub fn read(value: &DynValue) -> TensorResult<(Vec<i64>, Vec<f32>)> {
    match value.dtype().tensor_type() {
        Some(TensorElementType::Float32) => {
            let (shape, data) = value
                .try_extract_tensor::<f32>()
                .map_err(|e| e.to_string())?;
            Ok((shape.to_vec(), data.to_vec()))
        }
        Some(TensorElementType::Float16) => {
            let (shape, data) = value
                .try_extract_tensor::<f16>()
                .map_err(|e| e.to_string())?;
            let mut out = vec![0f32; data.len()];
            data.convert_to_f32_slice(&mut out);
            Ok((shape.to_vec(), out))
        }
        other => Err(format!("expected a float output, got {other:?}")),
    }
}

/// Rows of the last axis of a `[batch, seq, width]` float tensor at `(b, t)` pairs,
/// without converting the whole tensor (prefill logits are `seq * vocab` per row).
pub fn pick_rows(value: &DynValue, at: &[(usize, usize)]) -> TensorResult<Vec<Vec<f32>>> {
    fn pick<T: Copy>(
        shape: &[i64],
        data: &[T],
        at: &[(usize, usize)],
        f: impl Fn(T) -> f32,
    ) -> TensorResult<Vec<Vec<f32>>> {
        let [b, s, w] = shape else {
            return Err(format!(
                "expected a [batch, seq, width] tensor, got {shape:?}"
            ));
        };
        let (b, s, w) = (*b as usize, *s as usize, *w as usize);
        at.iter()
            .map(|&(i, t)| {
                if i >= b || t >= s {
                    return Err(format!("row ({i}, {t}) outside a {shape:?} tensor"));
                }
                let start = (i * s + t) * w;
                Ok(data[start..start + w].iter().map(|&v| f(v)).collect())
            })
            .collect()
    }
    match value.dtype().tensor_type() {
        Some(TensorElementType::Float32) => {
            let (shape, data) = value
                .try_extract_tensor::<f32>()
                .map_err(|e| e.to_string())?;
            pick(shape, data, at, |v| v)
        }
        Some(TensorElementType::Float16) => {
            let (shape, data) = value
                .try_extract_tensor::<f16>()
                .map_err(|e| e.to_string())?;
            pick(shape, data, at, f16::to_f32)
        }
        other => Err(format!("expected a float output, got {other:?}")),
    }
}

/// An empty key/value cache `[batch, heads, 0, head_dim]`.
pub fn empty_cache(
    ty: TensorElementType,
    batch: usize,
    heads: usize,
    head_dim: usize,
) -> TensorResult<DynValue> {
    floats(
        ty,
        vec![batch as i64, heads as i64, 0, head_dim as i64],
        Vec::new(),
    )
}

/// Builds a cache `[picks, heads, len, head_dim]` whose row `r` is row `picks[r].1` of
/// `sources[picks[r].0]` (`[batch, heads, past, head_dim]`), its positions copied to
/// the front and the rest zero. This forks a prompt's cache for its samples, merges
/// caches prefilled separately, and drops finished rows.
pub fn gather_cache(
    sources: &[&DynValue],
    picks: &[(usize, usize)],
    len: usize,
) -> TensorResult<DynValue> {
    let Some(first) = sources.first() else {
        return Err("no cache to gather from".into());
    };
    match first.dtype().tensor_type() {
        Some(TensorElementType::Float32) => gather::<f32>(sources, picks, len),
        Some(TensorElementType::Float16) => gather::<f16>(sources, picks, len),
        other => Err(format!("expected a float cache, got {other:?}")),
    }
}

fn gather<T>(sources: &[&DynValue], picks: &[(usize, usize)], len: usize) -> TensorResult<DynValue>
where
    T: ort::value::PrimitiveTensorElementType + Copy + Default + std::fmt::Debug + 'static,
{
    let mut views = Vec::with_capacity(sources.len());
    for src in sources {
        let (shape, data) = src.try_extract_tensor::<T>().map_err(|e| e.to_string())?;
        let [b, h, p, d] = shape[..] else {
            return Err(format!(
                "expected a [batch, heads, past, dim] cache, got {shape:?}"
            ));
        };
        views.push(([b as usize, h as usize, p as usize, d as usize], data));
    }
    let [_, heads, _, dim] = views[0].0;
    if views.iter().any(|(s, _)| s[1] != heads || s[3] != dim) {
        return Err("caches to merge differ in heads or head size".into());
    }
    let mut out = vec![T::default(); picks.len() * heads * len * dim];
    for (r, &(s, b)) in picks.iter().enumerate() {
        let ([batch, _, past, _], data) =
            views.get(s).ok_or_else(|| format!("no cache source {s}"))?;
        if b >= *batch {
            return Err(format!("cache row {b} outside a batch of {batch}"));
        }
        let keep = (*past).min(len);
        for h in 0..heads {
            let from = ((b * heads + h) * past) * dim;
            let to = ((r * heads + h) * len) * dim;
            out[to..to + keep * dim].copy_from_slice(&data[from..from + keep * dim]);
        }
    }
    Tensor::from_array((
        vec![picks.len() as i64, heads as i64, len as i64, dim as i64],
        out,
    ))
    .map(Into::into)
    .map_err(|e| e.to_string())
}

/// Rows of a `[rows, ...]` tensor seen in place (its memory, not a copy), to bind as
/// a run's output so that the run writes into those rows and leaves the others.
pub enum RowsView {
    F16(ort::value::TensorRefMut<'static, f16>),
    F32(ort::value::TensorRefMut<'static, f32>),
}

impl RowsView {
    pub fn bind(self, binding: &mut ort::session::IoBinding, name: String) -> ort::Result<()> {
        match self {
            RowsView::F16(v) => binding.bind_output(name, v),
            RowsView::F32(v) => binding.bind_output(name, v),
        }
    }
}

/// A [`RowsView`] of `shape`, starting `offset` elements into `tensor` (on the device
/// `memory` describes).
///
/// # Safety
/// The view holds `tensor`'s memory without a lifetime: it must be dropped (its run
/// finished) before `tensor` is, and nothing else may use the same rows meanwhile.
pub unsafe fn rows_view(
    tensor: &mut DynValue,
    memory: &ort::memory::MemoryInfo,
    offset: usize,
    shape: &[i64],
) -> TensorResult<RowsView> {
    let total: i64 = self::shape(tensor)?.iter().product();
    let count: i64 = shape.iter().product();
    if offset as i64 + count > total {
        return Err(format!(
            "a view of {count} elements at {offset} outside a tensor of {total}"
        ));
    }
    let ty = tensor.dtype().tensor_type();
    // Only this view writes through the pointer (ONNX Runtime's own accessor
    // returns it mutable).
    let base = tensor
        .view()
        .downcast::<ort::value::DynTensorValueType>()
        .map_err(|e| e.to_string())?
        .data_ptr()
        .cast_mut();
    let shape = ort::value::Shape::from(shape);
    // SAFETY: the range was checked against the tensor's size above, the element
    // size matches its type, and the caller keeps the tensor alive while the view is
    // used (this function's contract).
    unsafe {
        match ty {
            Some(TensorElementType::Float16) => {
                let at = base.cast::<f16>().add(offset).cast();
                ort::value::TensorRefMut::from_raw(memory.clone(), at, shape).map(RowsView::F16)
            }
            Some(TensorElementType::Float32) => {
                let at = base.cast::<f32>().add(offset).cast();
                ort::value::TensorRefMut::from_raw(memory.clone(), at, shape).map(RowsView::F32)
            }
            other => return Err(format!("no view of a {other:?} tensor")),
        }
    }
    .map_err(|e| e.to_string())
}
