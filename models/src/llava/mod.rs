//! One exported LLaVA model directory on ONNX Runtime: the tokenizer, the vision
//! encoder (with a small cache of image features), the token embeddings and the
//! decoder, plus the prompt assembly that splices image features in place of the
//! `<image>` token.
//!
//! `Llava` is one type whose methods live in the file of what they do: loading and
//! the crate's graph sessions here, prompt assembly and embedding in `embed`, prefill
//! and decode steps in `decode`, next-token choice on the device in `sample`, KV cache
//! row operations in `cache`. The submodules see this module's items through `use
//! super::*`.
use crate::device::{
    graphs_requested, memory_info, open_session, open_session_from_memory, open_session_with,
    Device,
};
use crate::error::ModelError;
use crate::manifest::{Decoder, Dtype, Kind, Manifest, Route};
use crate::ops;
use crate::preprocess;
use crate::sampling::{choose_with, Choice};
use crate::tensor;
use crate::tokenize::PromptTokenizer;
use ort::environment::Environment;
use ort::memory::MemoryInfo;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, TensorElementType};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tsst_backend::metric_names::TOKENS_PREFILLED;
use tsst_messages::Question;

mod cache;
mod decode;
mod embed;
mod graph;
mod sample;
mod stems;

pub use cache::{take_fitting, SlotPool};
pub use decode::{slot_step_inputs, Prefill};
pub use stems::{Stems, STEMS_ENV};

/// `0` keeps every CUDA arena's free regions instead of handing them back to the
/// device after prefills and gathers (a switch for measuring: giving memory back
/// frees it with `cudaFree`, which waits for the whole device).
pub const ARENA_SHRINK_ENV: &str = "TSST_ARENA_SHRINK";

/// Bytes of image features kept (per image file, the oldest dropped first): a
/// question's image is encoded again in every round of its search otherwise, and a
/// cache smaller than the questions in flight misses every time (they come round in
/// turn). 1 GiB holds ~110 images at LLaVA-1.5-7B's 576 x 4096.
const FEATURE_CACHE_BYTES: usize = 1 << 30;

/// A prompt ready to embed: token ids and, when it has an image, that image's
/// features (`num_image_tokens * hidden_size` values).
#[derive(Debug, Clone)]
pub struct Prompt {
    pub ids: Vec<i64>,
    pub features: Option<Arc<Vec<f32>>>,
    /// Leading ids that open every prompt of its question (the conversation up to
    /// the assistant's text, less at least one id): what a stem caches (`stems`).
    /// 0 while the model keeps no stems.
    pub stem: usize,
}

/// Whether two prompts embed the same image (the same features, or none): where
/// their ids agree, their caches then agree too.
pub fn same_image(a: &Option<Arc<Vec<f32>>>, b: &Option<Arc<Vec<f32>>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// How many first ids `a` and `b` have in common.
pub fn shared_ids<'a>(a: impl IntoIterator<Item = &'a i64>, b: &[i64]) -> usize {
    a.into_iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Per image: its features, or why it could not be read.
type Features = Result<Arc<Vec<f32>>, String>;

/// Per layer, the key and value caches `[rows, kv_heads, len, head_dim]`: host tensors
/// in [`KvMode::Host`], tensors on the session's device otherwise.
pub type Cache = Vec<(DynValue, DynValue)>;

/// Where the decoder's key/value caches live between runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvMode {
    /// Plain `Session::run`: the caches are host tensors, copied to the device and back
    /// every run under CUDA. The CPU default.
    Host,
    /// IoBinding: the presents stay where the decoder runs (device memory under CUDA)
    /// and are bound as the next run's past without a copy; the decoder concatenates
    /// past and new positions into a new present each run. Tokens are chosen on the
    /// device (`Want::Sample`); only they, or the rows the value head needs, come to
    /// the host. The CUDA default for the torch route.
    Bound,
    /// Bound, and each cache tensor is one `[rows, kv_heads, capacity, head_dim]`
    /// buffer bound as both past and present: GroupQueryAttention writes only the new
    /// position in place (genai route). GroupQueryAttention runs on CUDA in float16
    /// only: the CUDA default for float16 genai decoders.
    Shared,
}

impl KvMode {
    pub fn on_device(self) -> bool {
        !matches!(self, KvMode::Host)
    }
}

impl std::str::FromStr for KvMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "host" => Ok(KvMode::Host),
            "bound" => Ok(KvMode::Bound),
            "shared" => Ok(KvMode::Shared),
            other => Err(format!(
                "unknown KV mode `{other}` (expected host, bound or shared)"
            )),
        }
    }
}

/// The decoder's input embeddings: built on the host (prompts with spliced image
/// features), or one token per row that the decode step embeds itself with embed.onnx
/// (on the device in the bound modes; into a CUDA graph's own buffer where one runs).
pub enum Embeds {
    Host(Vec<f32>),
    Ids(Vec<i64>),
}

/// Host-side time of the decode steps over shared buffers ([`KvMode::Shared`]) since
/// [`Llava::take_step_times`]: what a step costs around the decoder's own kernels.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct StepTimes {
    pub steps: u64,
    /// Embedding the step's tokens and getting its inputs onto the device.
    pub inputs_ms: f64,
    /// Binding the inputs and outputs (a CUDA graph's are bound once).
    pub bind_ms: f64,
    /// The decoder's run (a graph replay), to the device's end of it.
    pub run_ms: f64,
    /// Choosing the tokens on the device and reading them back.
    pub sample_ms: f64,
}

impl StepTimes {
    /// Milliseconds a step: inputs, bind, run, sample.
    pub fn per_step(&self) -> [f64; 4] {
        let n = self.steps.max(1) as f64;
        [self.inputs_ms, self.bind_ms, self.run_ms, self.sample_ms].map(|ms| ms / n)
    }
}

/// What a decoder run brings back to the host.
#[derive(Debug, Clone, Copy)]
pub enum Want<'a> {
    /// Rows `(b, t)` of the logits (policy) or hidden states (value), as float32.
    Rows(&'a [(usize, usize)]),
    /// The next token of every row from its (single position's) logits, chosen where
    /// the decoder runs: greedy where `temperature <= 0`, else drawn with `uniform`
    /// (in [0, 1)), as `sampling::choose` does; with its log-probability.
    Sample {
        temperature: &'a [f32],
        uniform: &'a [f32],
    },
}

/// What one decoder run returns, owned (no borrow of the session).
pub struct DecoderOutput {
    /// For [`Want::Rows`], the rows asked for, as float32.
    pub picked: Vec<Vec<f32>>,
    /// For [`Want::Sample`], one choice per row.
    pub choices: Vec<Choice>,
    /// The caches including this run's positions (in [`KvMode::Shared`] steps, the
    /// past buffers themselves).
    pub presents: Cache,
}

/// The crate's own graphs, opened once per shape of use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKey {
    Gather {
        ty: TensorElementType,
        tensors: usize,
        sources: usize,
    },
    Pick(TensorElementType),
    Sample {
        ty: TensorElementType,
        vocab: usize,
        greedy: bool,
    },
}

pub struct Llava {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub tokenizer: PromptTokenizer,
    vision: Session,
    embed: Session,
    decoder: Session,
    vision_type: TensorElementType,
    embeds_type: TensorElementType,
    cache_type: TensorElementType,
    mask_type: TensorElementType,
    features: HashMap<PathBuf, Arc<Vec<f32>>>,
    feature_order: VecDeque<PathBuf>,
    feature_bytes: usize,
    env: Environment,
    device: Device,
    kv_mode: KvMode,
    /// Where bound outputs stay: the decoder's device.
    memory: MemoryInfo<'static>,
    /// Few entries: a linear search serves.
    ops: Vec<(OpKey, Session)>,
    /// KvMode::Bound: allocate each run's presents ourselves and bind them as outputs
    /// (else ONNX Runtime allocates them: `bind_output_to_device`).
    prealloc: bool,
    /// On CUDA: run options that hand an arena's free regions back to the device when
    /// the run ends. Used by prefills and cache gathers (a few runs per batch, not per
    /// step): caches of every width come and go, and an arena that kept them all would
    /// starve the other model on the device.
    shrink: Option<Arc<ort::session::RunOptions>>,
    /// With CUDA graphs on: the decode steps' graphs, and the options of the
    /// decoder's other runs (no graph, no shrinking).
    graphs: Option<graph::Graphs>,
    plain: Option<Arc<ort::session::RunOptions>>,
    allocator: Option<ort::memory::Allocator>,
    /// Question openings' caches kept across calls (`stems`).
    stems: Stems,
    /// Prompt positions prefilled so far.
    prefilled: u64,
    step_times: StepTimes,
}

impl Llava {
    /// Loads `dir`, which must hold a model of kind `kind`.
    pub fn load(
        dir: &Path,
        kind: Kind,
        device: Device,
        ort_lib: Option<&Path>,
    ) -> Result<Llava, ModelError> {
        let manifest = Manifest::load(dir)?;
        if manifest.kind != kind {
            return Err(ModelError::Manifest {
                path: dir.join(crate::manifest::FILE),
                reason: format!(
                    "field `kind` is `{:?}` but a {kind:?} model was asked for",
                    manifest.kind
                )
                .to_lowercase(),
            });
        }
        let tokenizer = PromptTokenizer::load(
            &dir.join(&manifest.tokenizer),
            manifest.special_tokens,
            manifest.add_bos,
        )?;
        let env = crate::ort_lib::environment(ort_lib, device.is_gpu())?;
        let vision = open_session(&env, device, &dir.join(&manifest.vision.file))?;
        let embed = open_session(&env, device, &dir.join(&manifest.embed.file))?;
        let kv_mode = default_kv_mode(device, &manifest);
        // CUDA graphs serve a policy's steps over shared buffers (`graph`).
        let graphs = device.is_gpu()
            && graphs_requested()
            && kind == Kind::Policy
            && kv_mode == KvMode::Shared;
        let decoder = open_session_with(&env, device, &dir.join(&manifest.decoder.file), graphs)?;
        let bad = |file: &str, reason: String| ModelError::Load {
            path: dir.join(file),
            reason,
        };
        let vision_type = tensor::input_type(&vision, &manifest.vision.input)
            .map_err(|e| bad(&manifest.vision.file, e))?;
        tensor::input_type(&embed, &manifest.embed.input)
            .map_err(|e| bad(&manifest.embed.file, e))?;
        let d = &manifest.decoder;
        let embeds_type =
            tensor::input_type(&decoder, &d.inputs_embeds).map_err(|e| bad(&d.file, e))?;
        let cache_type = tensor::input_type(&decoder, &Decoder::layer_name(&d.past_key, 0))
            .map_err(|e| bad(&d.file, e))?;
        let mask_type =
            tensor::input_type(&decoder, &d.attention_mask).map_err(|e| bad(&d.file, e))?;
        if !matches!(
            mask_type,
            TensorElementType::Int64 | TensorElementType::Int32
        ) {
            return Err(bad(
                &d.file,
                format!(
                    "`{}` is {mask_type:?}, expected int64 or int32",
                    d.attention_mask
                ),
            ));
        }
        let fed = decoder_inputs(d);
        if let Some(extra) = tensor::input_names(&decoder)
            .into_iter()
            .find(|n| !fed.contains(n))
        {
            return Err(bad(
                &d.file,
                format!("the decoder takes input `{extra}`, which the manifest does not name"),
            ));
        }
        for name in &fed {
            tensor::input_type(&decoder, name).map_err(|e| bad(&d.file, e))?;
        }
        let plain = match graphs {
            true => Some(Arc::new(graph::graph_options(-1).map_err(|e| {
                ModelError::Device {
                    device: device.to_string(),
                    reason: e.to_string(),
                }
            })?)),
            false => None,
        };
        Ok(Llava {
            dir: dir.to_path_buf(),
            manifest,
            tokenizer,
            vision,
            embed,
            decoder,
            vision_type,
            embeds_type,
            cache_type,
            mask_type,
            features: HashMap::new(),
            feature_order: VecDeque::new(),
            feature_bytes: 0,
            env,
            device,
            kv_mode,
            memory: memory_info(device)?,
            ops: Vec::new(),
            prealloc: false,
            allocator: None,
            shrink: shrink_options(device)?,
            graphs: graphs.then(graph::Graphs::default),
            plain,
            stems: Stems::default(),
            prefilled: 0,
            step_times: StepTimes::default(),
        })
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn kv_mode(&self) -> KvMode {
        self.kv_mode
    }

    /// In [`KvMode::Bound`], allocate the presents of each run here and bind them as
    /// outputs, instead of letting ONNX Runtime allocate outputs bound to the device
    /// (a diagnostic: see models/README.md).
    pub fn set_prealloc_presents(&mut self, on: bool) {
        self.prealloc = on;
    }

    /// Chooses where the caches live (the default follows [`default_kv_mode`]). The
    /// shared buffer needs the genai route's GroupQueryAttention.
    pub fn set_kv_mode(&mut self, mode: KvMode) -> Result<(), ModelError> {
        if mode == KvMode::Shared && self.route() != Route::Genai {
            return Err(ModelError::run(
                &self.decoder_file(),
                "a shared past/present buffer needs a genai-route decoder (GroupQueryAttention)",
            ));
        }
        self.kv_mode = mode;
        Ok(())
    }

    pub fn label(&self) -> String {
        self.dir.display().to_string()
    }

    fn run_error(&self, file: &str, e: impl std::fmt::Display) -> ModelError {
        ModelError::run(&self.dir.join(file).display().to_string(), e)
    }

    pub fn hidden_size(&self) -> usize {
        self.manifest.decoder.hidden_size
    }

    /// The session of one of the crate's graphs, opened on first use.
    fn op(&mut self, key: OpKey) -> Result<&mut Session, ModelError> {
        let at = match self.ops.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                let (bytes, label) = match key {
                    OpKey::Gather {
                        ty,
                        tensors,
                        sources,
                    } => (
                        ops::gather_graph(ty, tensors, sources),
                        format!("<gather graph {ty:?} x{tensors} from {sources}>"),
                    ),
                    OpKey::Pick(ty) => (ops::pick_graph(ty), format!("<pick graph {ty:?}>")),
                    OpKey::Sample { ty, vocab, greedy } => (
                        ops::sample_graph(ty, vocab, greedy),
                        format!("<sample graph {ty:?} vocab {vocab} greedy {greedy}>"),
                    ),
                };
                let bytes = bytes.map_err(|e| ModelError::run(&label, e))?;
                let session = open_session_from_memory(&self.env, self.device, &bytes, &label)?;
                self.ops.push((key, session));
                self.ops.len() - 1
            }
        };
        Ok(&mut self.ops[at].1)
    }

    /// Counts prompt positions prefilled; a policy's also go to a counter the worker
    /// exports.
    pub fn count_prefilled(&mut self, positions: usize) {
        self.prefilled += positions as u64;
        if self.manifest.kind == Kind::Policy {
            metrics::counter!(TOKENS_PREFILLED).increment(positions as u64);
        }
    }

    /// Prompt positions prefilled since the model was loaded.
    pub fn prefilled(&self) -> u64 {
        self.prefilled
    }

    /// The decode steps' host-side times since the last call, and a fresh count.
    pub fn take_step_times(&mut self) -> StepTimes {
        std::mem::take(&mut self.step_times)
    }

    pub fn route(&self) -> Route {
        self.manifest.decoder.route
    }

    pub fn decoder_file(&self) -> String {
        self.dir
            .join(&self.manifest.decoder.file)
            .display()
            .to_string()
    }
}

/// Where the caches live by default: host memory on the CPU. On CUDA: for a float16
/// genai decoder, one shared buffer per cache tensor on the device; for a float32
/// genai decoder, host memory (GroupQueryAttention has no float32 CUDA kernel, so it
/// runs on the CPU and device-resident caches would cross to the host for it
/// anyway: measured slower); for the torch route, bound to the device.
fn shrink_options(device: Device) -> Result<Option<Arc<ort::session::RunOptions>>, ModelError> {
    let Device::Cuda(id) = device else {
        return Ok(None);
    };
    if std::env::var(ARENA_SHRINK_ENV).is_ok_and(|v| v == "0") {
        return Ok(None);
    }
    let fail = |e: ort::Error| ModelError::Device {
        device: device.to_string(),
        reason: e.to_string(),
    };
    let mut options = ort::session::RunOptions::new().map_err(fail)?;
    options
        .set("memory.enable_memory_arena_shrinkage", format!("gpu:{id}"))
        .map_err(fail)?;
    Ok(Some(Arc::new(options)))
}

pub fn default_kv_mode(device: Device, manifest: &Manifest) -> KvMode {
    match (device, manifest.decoder.route, manifest.dtype) {
        (Device::Cpu, _, _) => KvMode::Host,
        (Device::Cuda(_), Route::Genai, Dtype::Float16) => KvMode::Shared,
        (Device::Cuda(_), Route::Genai, Dtype::Float32) => KvMode::Host,
        (Device::Cuda(_), Route::Torch, _) => KvMode::Bound,
    }
}

/// Every input the decoder is fed.
fn decoder_inputs(d: &Decoder) -> Vec<String> {
    let mut names = vec![d.inputs_embeds.clone(), d.attention_mask.clone()];
    names.extend(d.position_ids.clone());
    for i in 0..d.num_layers {
        names.push(Decoder::layer_name(&d.past_key, i));
        names.push(Decoder::layer_name(&d.past_value, i));
    }
    names
}
