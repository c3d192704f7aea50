//! One exported LLaVA model directory on ONNX Runtime: the tokenizer, the vision
//! encoder (with a small cache of image features), the token embeddings and the
//! decoder, plus the prompt assembly that splices image features in place of the
//! `<image>` token.
use crate::device::{memory_info, open_session, open_session_from_memory, Device};
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
use tsst_messages::Question;

/// Image features kept per image file: a question's image is encoded again in every
/// round of its search otherwise.
const FEATURE_CACHE: usize = 32;

/// A prompt ready to embed: token ids and, when it has an image, that image's
/// features (`num_image_tokens * hidden_size` values).
#[derive(Debug, Clone)]
pub struct Prompt {
    pub ids: Vec<i64>,
    pub features: Option<Arc<Vec<f32>>>,
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
/// features), or embed.onnx's output as it is (on the device in the bound modes).
pub enum Embeds {
    Host(Vec<f32>),
    Value(DynValue),
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
    allocator: Option<ort::memory::Allocator>,
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
        let decoder = open_session(&env, device, &dir.join(&manifest.decoder.file))?;
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
        let kv_mode = default_kv_mode(device, &manifest);
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
            env,
            device,
            kv_mode,
            memory: memory_info(device)?,
            ops: Vec::new(),
            prealloc: false,
            allocator: None,
            shrink: shrink_options(device)?,
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

    /// Builds the prompts for `(question, partial solution)` pairs: the
    /// `llava_v1` conversation, its token ids, and the image features of questions
    /// with an image (the vision encoder runs once for all images not cached). A
    /// question whose image cannot be read fails alone.
    pub fn prompts(
        &mut self,
        items: &[(&Question, &str)],
    ) -> Result<Vec<Result<Prompt, String>>, ModelError> {
        let mut out = Vec::with_capacity(items.len());
        let mut pending: Vec<(usize, PathBuf)> = Vec::new();
        for (i, (question, partial)) in items.iter().enumerate() {
            let text = tsst_labels::conversation(question, partial);
            let ids = match self.tokenizer.encode(&text) {
                Ok(ids) => ids,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    continue;
                }
            };
            let images = ids
                .iter()
                .filter(|&&id| id == self.manifest.special_tokens.image)
                .count();
            let expected = usize::from(question.image.is_some());
            if images != expected {
                out.push(Err(format!(
                    "the prompt has {images} image tokens, expected {expected}"
                )));
                continue;
            }
            if let Some(path) = &question.image {
                match self.features.get(path) {
                    Some(f) => out.push(Ok(Prompt {
                        ids,
                        features: Some(f.clone()),
                    })),
                    None => {
                        pending.push((i, path.clone()));
                        out.push(Ok(Prompt {
                            ids,
                            features: None,
                        }));
                    }
                }
            } else {
                out.push(Ok(Prompt {
                    ids,
                    features: None,
                }));
            }
        }
        if !pending.is_empty() {
            let mut unique: Vec<PathBuf> = pending.iter().map(|(_, p)| p.clone()).collect();
            unique.sort();
            unique.dedup();
            let encoded = self.encode_images(&unique)?;
            for (i, path) in pending {
                let k = unique.binary_search(&path).unwrap_or_default();
                match &encoded[k] {
                    Ok(f) => {
                        if let Ok(p) = &mut out[i] {
                            p.features = Some(f.clone());
                        }
                    }
                    Err(e) => out[i] = Err(e.clone()),
                }
            }
        }
        Ok(out)
    }

    /// Runs the vision encoder on the readable images among `paths` (one batch).
    fn encode_images(&mut self, paths: &[PathBuf]) -> Result<Vec<Features>, ModelError> {
        let v = self.manifest.vision.clone();
        let mut out: Vec<Features> = Vec::with_capacity(paths.len());
        let mut batch = Vec::new();
        let mut readable = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            match preprocess::load(path, &v) {
                Ok(px) => {
                    batch.extend(px);
                    readable.push(i);
                    out.push(Ok(Arc::new(Vec::new())));
                }
                Err(e) => out.push(Err(e)),
            }
        }
        if readable.is_empty() {
            return Ok(out);
        }
        let s = i64::from(v.image_size);
        let input = tensor::floats(
            self.vision_type,
            vec![readable.len() as i64, 3, s, s],
            batch,
        )
        .map_err(|e| self.run_error(&v.file, e))?;
        let (shape, data) = {
            let mut outputs = self
                .vision
                .run(vec![(v.input.as_str(), input)])
                .map_err(|e| ModelError::run(&v.file, e))?;
            let value = outputs
                .remove(&v.output)
                .ok_or_else(|| ModelError::run(&v.file, format!("no output `{}`", v.output)))?;
            tensor::read(&value).map_err(|e| ModelError::run(&v.file, e))?
        };
        let per = v.num_image_tokens * self.hidden_size();
        let want = [
            readable.len() as i64,
            v.num_image_tokens as i64,
            self.hidden_size() as i64,
        ];
        if shape != want {
            return Err(self.run_error(
                &v.file,
                format!("`{}` is {shape:?}, expected {want:?}", v.output),
            ));
        }
        for (k, &i) in readable.iter().enumerate() {
            let features = Arc::new(data[k * per..(k + 1) * per].to_vec());
            self.remember(paths[i].clone(), features.clone());
            out[i] = Ok(features);
        }
        Ok(out)
    }

    /// Drops the cached image features (the next prompt runs the vision encoder).
    pub fn forget_features(&mut self) {
        self.features.clear();
        self.feature_order.clear();
    }

    fn remember(&mut self, path: PathBuf, features: Arc<Vec<f32>>) {
        if self.features.insert(path.clone(), features).is_none() {
            self.feature_order.push_back(path);
        }
        while self.feature_order.len() > FEATURE_CACHE {
            if let Some(old) = self.feature_order.pop_front() {
                self.features.remove(&old);
            }
        }
    }

    /// Positions a prompt takes in the decoder: its ids, with the image token
    /// replaced by the image's rows.
    pub fn embedded_len(&self, prompt: &Prompt) -> usize {
        let images = prompt
            .ids
            .iter()
            .filter(|&&id| id == self.manifest.special_tokens.image)
            .count();
        prompt.ids.len() - images + images * self.manifest.vision.num_image_tokens
    }

    /// Embeds `ids` (`[rows, seq]`, padded with the pad id) with embed.onnx and returns
    /// `rows * seq * hidden` values.
    pub fn embed_ids(&mut self, ids: Vec<i64>, rows: usize) -> Result<Vec<f32>, ModelError> {
        let e = self.manifest.embed.clone();
        let hidden = self.hidden_size();
        let seq = ids.len().checked_div(rows).unwrap_or(0);
        let input = tensor::ints(vec![rows as i64, seq as i64], ids)
            .map_err(|err| self.run_error(&e.file, err))?;
        let mut outputs = self
            .embed
            .run(vec![(e.input.as_str(), input)])
            .map_err(|err| ModelError::run(&e.file, err))?;
        let value = outputs
            .remove(&e.output)
            .ok_or_else(|| ModelError::run(&e.file, format!("no output `{}`", e.output)))?;
        let (shape, data) = tensor::read(&value).map_err(|err| ModelError::run(&e.file, err))?;
        let want = [rows as i64, seq as i64, hidden as i64];
        if shape != want {
            return Err(ModelError::run(
                &e.file,
                format!("`{}` is {shape:?}, expected {want:?}", e.output),
            ));
        }
        Ok(data)
    }

    /// The input embeddings of each prompt (`embedded_len * hidden` values): the
    /// token embeddings with the image features spliced in place of the image token.
    pub fn embed_prompts(&mut self, prompts: &[&Prompt]) -> Result<Vec<Vec<f32>>, ModelError> {
        let special = self.manifest.special_tokens;
        let hidden = self.hidden_size();
        let seq = prompts.iter().map(|p| p.ids.len()).max().unwrap_or(0);
        // The image id may lie outside the embedding table; its row is replaced, so
        // the pad id stands in for it.
        let mut ids = Vec::with_capacity(prompts.len() * seq);
        for p in prompts {
            ids.extend(
                p.ids
                    .iter()
                    .map(|&id| if id == special.image { special.pad } else { id }),
            );
            ids.extend(std::iter::repeat_n(special.pad, seq - p.ids.len()));
        }
        let table = self.embed_ids(ids, prompts.len())?;
        let mut out = Vec::with_capacity(prompts.len());
        for (r, p) in prompts.iter().enumerate() {
            let mut rows = Vec::with_capacity(self.embedded_len(p) * hidden);
            for (t, &id) in p.ids.iter().enumerate() {
                if id == special.image {
                    let features = p.features.as_ref().ok_or_else(|| {
                        ModelError::run(&self.label(), "an image token without image features")
                    })?;
                    rows.extend_from_slice(features);
                } else {
                    let at = (r * seq + t) * hidden;
                    rows.extend_from_slice(&table[at..at + hidden]);
                }
            }
            out.push(rows);
        }
        Ok(out)
    }

    /// Embeds one token per row for a decode step; in the bound modes the embeddings
    /// stay on the device.
    pub fn embed_step(&mut self, ids: Vec<i64>) -> Result<DynValue, ModelError> {
        let e = self.manifest.embed.clone();
        let rows = ids.len();
        let input =
            tensor::ints(vec![rows as i64, 1], ids).map_err(|err| self.run_error(&e.file, err))?;
        let value = if self.kv_mode.on_device() {
            let mut binding = self
                .embed
                .create_binding()
                .map_err(|err| ModelError::run(&e.file, err))?;
            binding
                .bind_input(e.input.as_str(), &input)
                .and_then(|_| binding.bind_output_to_device(e.output.as_str(), &self.memory))
                .map_err(|err| ModelError::run(&e.file, err))?;
            let mut outputs = self
                .embed
                .run_binding(&binding)
                .map_err(|err| ModelError::run(&e.file, err))?;
            outputs.remove(&e.output)
        } else {
            let mut outputs = self
                .embed
                .run(vec![(e.input.as_str(), input)])
                .map_err(|err| ModelError::run(&e.file, err))?;
            outputs.remove(&e.output)
        };
        let value =
            value.ok_or_else(|| ModelError::run(&e.file, format!("no output `{}`", e.output)))?;
        let shape = tensor::shape(&value).map_err(|err| ModelError::run(&e.file, err))?;
        let want = [rows as i64, 1, self.hidden_size() as i64];
        if shape != want {
            return Err(ModelError::run(
                &e.file,
                format!("`{}` is {shape:?}, expected {want:?}", e.output),
            ));
        }
        Ok(value)
    }

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
        let embeds = match embeds {
            Embeds::Host(data) => {
                let seq = data.len().checked_div(rows * hidden).unwrap_or(0);
                tensor::floats(
                    self.embeds_type,
                    vec![rows as i64, seq as i64, hidden as i64],
                    data,
                )
                .map_err(err)?
            }
            Embeds::Value(v) => v,
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
        let mut outputs = self.decoder.run(inputs).map_err(|e| err(e.to_string()))?;
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
            if self.allocator.is_none() {
                self.allocator = Some(
                    ort::memory::Allocator::new(&self.decoder, self.memory.clone()).map_err(err)?,
                );
            }
            let allocator = self.allocator.as_ref().expect("set above");
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
        let mut binding = self.decoder.create_binding().map_err(err)?;
        for (name, value) in &inputs {
            binding.bind_input(name.as_str(), value).map_err(err)?;
        }
        for (i, (k, v)) in past.iter_mut().enumerate() {
            let (pk, pv) = (
                Decoder::layer_name(&d.past_key, i),
                Decoder::layer_name(&d.past_value, i),
            );
            let (nk, nv) = (
                Decoder::layer_name(&d.present_key, i),
                Decoder::layer_name(&d.present_value, i),
            );
            binding.bind_input(pk, &*k).map_err(err)?;
            binding.bind_input(pv, &*v).map_err(err)?;
            if shared {
                binding.bind_output(nk, &mut *k).map_err(err)?;
                binding.bind_output(nv, &mut *v).map_err(err)?;
            } else if let Some(own) = own.as_mut() {
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
        binding
            .bind_output_to_device(wanted, &self.memory)
            .map_err(err)?;
        let (value, presents) = {
            // A shared-buffer step keeps its arena; a prefill (or a bound-mode step)
            // gives back what the last batch left free.
            let shrink = self.shrink.clone().filter(|_| !shared);
            let mut outputs = match &shrink {
                Some(options) => self.decoder.run_binding_with_options(&binding, options),
                None => self.decoder.run_binding(&binding),
            }
            .map_err(err)?;
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
        let (picked, choices) = match want {
            Want::Rows(at) => (self.pick(&value, at)?, Vec::new()),
            Want::Sample {
                temperature,
                uniform,
            } => (Vec::new(), self.sample(&value, temperature, uniform)?),
        };
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

    /// One token per row from `[rows, 1, vocab]` logits on the decoder's device, with
    /// the sample graph: only tokens and log-probabilities cross to the host.
    fn sample(
        &mut self,
        logits: &DynValue,
        temperature: &[f32],
        uniform: &[f32],
    ) -> Result<Vec<Choice>, ModelError> {
        let file = self.decoder_file();
        let err = |e: String| ModelError::run(&file, e);
        let shape = tensor::shape(logits).map_err(err)?;
        let rows = temperature.len();
        if shape.len() != 3 || shape[0] != rows as i64 || shape[1] != 1 {
            return Err(err(format!(
                "sampling takes [{rows}, 1, vocab] logits, got {shape:?}"
            )));
        }
        let ty = logits
            .dtype()
            .tensor_type()
            .ok_or_else(|| err("logits are not a tensor".into()))?;
        let vocab = shape[2] as usize;
        let extra = ops::sample_inputs(temperature, uniform, vocab).map_err(err)?;
        let greedy = extra.is_none();
        let mut inputs = vec![(ops::SAMPLE_LOGITS, SessionInputValue::from(logits))];
        for (name, value) in extra.unwrap_or_default() {
            inputs.push((name, SessionInputValue::from(value)));
        }
        let session = self.op(OpKey::Sample { ty, vocab, greedy })?;
        let outputs = session.run(inputs).map_err(|e| err(e.to_string()))?;
        let tokens = outputs
            .get(ops::SAMPLE_TOKEN)
            .ok_or_else(|| err("the sample graph returned no tokens".into()))?
            .try_extract_tensor::<i64>()
            .map_err(|e| err(e.to_string()))?
            .1
            .to_vec();
        let logprobs = outputs
            .get(ops::SAMPLE_LOGPROB)
            .ok_or_else(|| err("the sample graph returned no log-probabilities".into()))?
            .try_extract_tensor::<f32>()
            .map_err(|e| err(e.to_string()))?
            .1
            .to_vec();
        if tokens.len() != rows || logprobs.len() != rows {
            return Err(err(
                "the sample graph returned the wrong number of rows".into()
            ));
        }
        Ok(tokens
            .into_iter()
            .zip(logprobs)
            .map(|(token, logprob)| Choice {
                token,
                logprob: f64::from(logprob),
            })
            .collect())
    }

    /// Rows `(b, t)` of a `[batch, seq, width]` tensor on the decoder's device, as
    /// float32 on the host: only these rows cross to the host.
    fn pick(
        &mut self,
        value: &DynValue,
        at: &[(usize, usize)],
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let file = self.decoder_file();
        let err = |e: String| ModelError::run(&file, e);
        let shape = tensor::shape(value).map_err(err)?;
        let [b, s, w] = shape[..] else {
            return Err(err(format!(
                "expected a [batch, seq, width] output, got {shape:?}"
            )));
        };
        let (b, s, w) = (b as usize, s as usize, w as usize);
        let mut idx = Vec::with_capacity(at.len());
        for &(i, t) in at {
            if i >= b || t >= s {
                return Err(err(format!("row ({i}, {t}) outside a {shape:?} output")));
            }
            idx.push((i * s + t) as i64);
        }
        let ty = value
            .dtype()
            .tensor_type()
            .ok_or_else(|| err("output is not a tensor".into()))?;
        let idx = tensor::ints(vec![at.len() as i64], idx).map_err(err)?;
        let session = self.op(OpKey::Pick(ty))?;
        let mut outputs = session
            .run(vec![
                (ops::PICK_INPUT, SessionInputValue::from(value)),
                (ops::PICK_INDEX, SessionInputValue::from(idx)),
            ])
            .map_err(|e| err(e.to_string()))?;
        let rows = outputs
            .remove(ops::PICK_OUTPUT)
            .ok_or_else(|| err("the pick graph returned nothing".into()))?;
        let (_, data) = tensor::read(&rows).map_err(err)?;
        Ok(data.chunks(w.max(1)).map(<[f32]>::to_vec).collect())
    }

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
