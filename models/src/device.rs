//! Where the models run, and opening ONNX sessions there.
use crate::error::ModelError;
use ort::environment::Environment;
use ort::session::Session;
use std::path::Path;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The worker config's device type, so a config value reaches the sessions as is.
pub use tsst_config::Device;

/// Intra-op threads of each CUDA session, without spinning; unset or 0: ONNX Runtime's
/// default, a spinning pool of every core.
pub const INTRA_THREADS_ENV: &str = "TSST_ORT_INTRA_THREADS";

/// Caps each CUDA session's memory arena (MiB).
pub const MEM_LIMIT_ENV: &str = "TSST_CUDA_MEM_LIMIT_MB";

/// Which attention kernels ONNX Runtime's CUDA attention ops may pick: `flash` (the
/// default: flash, memory-efficient or plain attention, never cuDNN's) or `auto`
/// (ONNX Runtime's own choice, which prefers cuDNN's on Hopper).
pub const ATTENTION_ENV: &str = "TSST_ATTENTION";

/// A float16 policy's decode steps over row slots on CUDA run as CUDA graphs
/// (`llava::graph`), captured once per slot buffer set and replayed every step, unless
/// this is `0`. Measured at the 7B shape on an H100 (bench/RESULTS.md, 2026-12-07): the
/// same greedy tokens, the step 1.05-1.17x faster, the search 6% faster.
pub const GRAPHS_ENV: &str = "TSST_CUDA_GRAPHS";

/// Whether CUDA graphs are wanted: yes unless [`GRAPHS_ENV`] is `0`.
pub fn graphs_requested() -> bool {
    std::env::var(GRAPHS_ENV).as_deref() != Ok("0")
}

/// Every session run of this crate holds this lock shared; capturing a CUDA graph holds
/// it alone. ONNX Runtime captures in `cudaStreamCaptureModeGlobal`: a `cudaMalloc` or
/// a synchronous copy from any other thread meanwhile (the other model of an embedded
/// worker) would invalidate the capture and fail both runs.
static RUNS: RwLock<()> = RwLock::new(());

/// Held around one session run (never nested: a writer waiting would block a second
/// read on the same thread).
pub fn run_guard() -> RwLockReadGuard<'static, ()> {
    RUNS.read().unwrap_or_else(PoisonError::into_inner)
}

/// Held around a run that may capture a CUDA graph: no other run in the process.
pub fn capture_guard() -> RwLockWriteGuard<'static, ()> {
    RUNS.write().unwrap_or_else(PoisonError::into_inner)
}

/// Opens `file` on `device`. CUDA is registered with `error_on_failure`: asking for a
/// GPU where none works is an error, never a silent CPU fallback.
pub fn open_session(env: &Environment, device: Device, file: &Path) -> Result<Session, ModelError> {
    open_session_with(env, device, file, false)
}

/// [`open_session`], with CUDA graphs allowed on CUDA when `graphs` (runs then say
/// which graph they are, or `-1` for none, in their run options).
pub fn open_session_with(
    env: &Environment,
    device: Device,
    file: &Path,
    graphs: bool,
) -> Result<Session, ModelError> {
    if !file.is_file() {
        return Err(ModelError::Load {
            path: file.to_path_buf(),
            reason: "file not found".into(),
        });
    }
    let load = |reason: String| ModelError::Load {
        path: file.to_path_buf(),
        reason,
    };
    // Loading allocates on the device: not while a graph is captured.
    let _guard = run_guard();
    builder(env, device, graphs, &load)?
        .commit_from_file(file)
        .map_err(|e| load(e.to_string()))
}

/// Opens a model held in memory (the crate's own small graphs, `ops`) on `device`;
/// `label` names it in errors.
pub fn open_session_from_memory(
    env: &Environment,
    device: Device,
    bytes: &[u8],
    label: &str,
) -> Result<Session, ModelError> {
    let load = |reason: String| ModelError::Load {
        path: label.into(),
        reason,
    };
    // Loading allocates on the device: not while a graph is captured.
    let _guard = run_guard();
    builder(env, device, false, &load)?
        .commit_from_memory(bytes)
        .map_err(|e| load(e.to_string()))
}

fn builder(
    env: &Environment,
    device: Device,
    graphs: bool,
    load: &dyn Fn(String) -> ModelError,
) -> Result<ort::session::builder::SessionBuilder, ModelError> {
    let mut builder = Session::builder(env).map_err(|e| load(e.to_string()))?;
    // Diagnostics: TSST_ORT_PROFILE=PREFIX makes every session write ONNX Runtime's
    // per-node profile to PREFIX_<time>.json when it closes.
    if let Some(prefix) = std::env::var_os("TSST_ORT_PROFILE").filter(|p| !p.is_empty()) {
        builder = builder
            .with_profiling(prefix)
            .map_err(ort::Error::<()>::from)
            .map_err(|e| load(e.to_string()))?;
    }
    match device {
        Device::Cpu => Ok(builder),
        Device::Cuda(id) => with_cuda(builder, id, graphs),
    }
}

/// Where a session on `device` keeps tensors that stay on the device: CUDA device
/// memory, or host memory on the CPU.
pub fn memory_info(device: Device) -> Result<ort::memory::MemoryInfo<'static>, ModelError> {
    use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
    let (alloc, id) = match device {
        Device::Cpu => (AllocationDevice::CPU, 0),
        Device::Cuda(id) => (AllocationDevice::CUDA, ordinal(id)?),
    };
    MemoryInfo::new(alloc, id, AllocatorType::Device, MemoryType::Default).map_err(|e| {
        ModelError::Device {
            device: device.to_string(),
            reason: e.to_string(),
        }
    })
}

/// ONNX Runtime numbers devices with `i32`.
fn ordinal(id: u32) -> Result<i32, ModelError> {
    i32::try_from(id).map_err(|_| ModelError::Device {
        device: Device::Cuda(id).to_string(),
        reason: "device ordinal out of range".into(),
    })
}

#[cfg(feature = "cuda")]
fn with_cuda(
    builder: ort::session::builder::SessionBuilder,
    id: u32,
    graphs: bool,
) -> Result<ort::session::builder::SessionBuilder, ModelError> {
    // TF32 matmuls move fp32 results by ~1e-3, enough to break parity with the
    // exported model; fp16 exports are unaffected.
    // Arenas grow by what is asked, not to the next power of two: a batch's caches
    // are a few large buffers, and doubling would strand gigabytes per session.
    let mut cuda = ort::ep::CUDA::default()
        .with_device_id(ordinal(id)?)
        .with_tf32(false)
        .with_arena_extend_strategy(ort::ep::ArenaExtendStrategy::SameAsRequested)
        .with_cuda_graph(graphs);
    // A cap per session's arena (MiB): to try a smaller card, or to make a device run
    // out of memory on purpose.
    if let Some(mb) = std::env::var(MEM_LIMIT_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        cuda = cuda.with_memory_limit(mb << 20);
    }
    // On Hopper, ONNX Runtime 1.31 lets GroupQueryAttention prefer cuDNN's fused
    // attention unless the kernels are pinned. cuDNN builds an execution graph for
    // every new (batch, query length, key length) and caches it per thread; a search's
    // value rests and admissions come in ever new lengths, so that build is paid on
    // nearly every run. Pinning the other kernels keeps attention free of per-shape
    // builds.
    match std::env::var(ATTENTION_ENV).as_deref() {
        Ok("auto") => {}
        Ok("flash") | Ok("") | Err(_) => {
            use ort::ep::cuda::AttentionBackend as A;
            cuda =
                cuda.with_attention_backend(A::FLASH_ATTENTION | A::EFFICIENT_ATTENTION | A::MATH);
        }
        Ok(other) => {
            return Err(ModelError::Device {
                device: Device::Cuda(id).to_string(),
                reason: format!("{ATTENTION_ENV}={other:?}: expected `flash` or `auto`"),
            });
        }
    }
    let cuda = cuda.build().error_on_failure();
    let fail = |e: ort::Error<()>| ModelError::Device {
        device: Device::Cuda(id).to_string(),
        reason: e.to_string(),
    };
    let mut builder = builder
        .with_execution_providers([cuda])
        .map_err(ort::Error::<()>::from)
        .map_err(fail)?;
    // A session on the GPU runs only shape arithmetic and small glue on the CPU, yet by
    // default gets a pool of every core that spins between runs, and a worker opens a
    // dozen such sessions and runs two models at once. Fewer threads are a switch, not
    // the default: with tiny fp16 models on an H100 one thread made no difference
    // (bench/RESULTS.md), and the 7B shape was not measured.
    let threads = std::env::var(INTRA_THREADS_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    if threads > 0 {
        builder = builder
            .with_intra_threads(threads)
            .map_err(ort::Error::<()>::from)
            .map_err(fail)?
            .with_intra_op_spinning(false)
            .map_err(ort::Error::<()>::from)
            .map_err(fail)?;
    }
    Ok(builder)
}

#[cfg(not(feature = "cuda"))]
fn with_cuda(
    _builder: ort::session::builder::SessionBuilder,
    id: u32,
    _graphs: bool,
) -> Result<ort::session::builder::SessionBuilder, ModelError> {
    Err(ModelError::Device {
        device: Device::Cuda(id).to_string(),
        reason: "this build has no CUDA support (build with `--features cuda`)".into(),
    })
}
