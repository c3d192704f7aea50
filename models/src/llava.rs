//! One exported LLaVA model directory on ONNX Runtime: the tokenizer, the vision
//! encoder (with a small cache of image features), the token embeddings and the
//! decoder, plus the prompt assembly that splices image features in place of the
//! `<image>` token.
use crate::device::{open_session, Device};
use crate::error::ModelError;
use crate::manifest::{Decoder, Kind, Manifest, Route};
use crate::preprocess;
use crate::tensor;
use crate::tokenize::PromptTokenizer;
use ort::session::Session;
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

/// What one decoder run returns, owned (no borrow of the session).
pub struct DecoderOutput {
    pub logits: Option<DynValue>,
    pub hidden_states: Option<DynValue>,
    /// Per layer, the key and value caches including this run's positions.
    pub presents: Vec<(DynValue, DynValue)>,
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
    features: HashMap<PathBuf, Arc<Vec<f32>>>,
    feature_order: VecDeque<PathBuf>,
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
            features: HashMap::new(),
            feature_order: VecDeque::new(),
        })
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

    /// An empty cache for `rows` sequences, one per layer.
    pub fn empty_caches(&self, rows: usize) -> Result<Vec<(DynValue, DynValue)>, ModelError> {
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
    /// `embeds` is `[rows, seq, hidden]`, `mask` is `[rows, past + seq]`, `positions`
    /// (`[rows, seq]`) is used by the torch route only, and `past` holds each layer's
    /// `[rows, kv_heads, past, head_dim]` caches.
    pub fn decode(
        &mut self,
        rows: usize,
        embeds: Vec<f32>,
        mask: Vec<i64>,
        positions: Vec<i64>,
        past: Vec<(DynValue, DynValue)>,
    ) -> Result<DecoderOutput, ModelError> {
        let d = self.manifest.decoder.clone();
        let err = |e: String| ModelError::run(&self.dir.join(&d.file).display().to_string(), e);
        let hidden = d.hidden_size;
        let seq = embeds.len().checked_div(rows * hidden).unwrap_or(0);
        let total = mask.len().checked_div(rows).unwrap_or(0);
        let mut inputs: Vec<(String, DynValue)> = Vec::with_capacity(3 + 2 * d.num_layers);
        inputs.push((
            d.inputs_embeds.clone(),
            tensor::floats(
                self.embeds_type,
                vec![rows as i64, seq as i64, hidden as i64],
                embeds,
            )
            .map_err(err)?,
        ));
        inputs.push((
            d.attention_mask.clone(),
            tensor::ints(vec![rows as i64, total as i64], mask).map_err(err)?,
        ));
        if let Some(name) = &d.position_ids {
            inputs.push((
                name.clone(),
                tensor::ints(vec![rows as i64, seq as i64], positions).map_err(err)?,
            ));
        }
        for (i, (k, v)) in past.into_iter().enumerate() {
            inputs.push((Decoder::layer_name(&d.past_key, i), k));
            inputs.push((Decoder::layer_name(&d.past_value, i), v));
        }
        let mut outputs = self.decoder.run(inputs).map_err(|e| err(e.to_string()))?;
        let logits = d.logits.as_ref().and_then(|n| outputs.remove(n));
        let hidden_states = d.hidden_states.as_ref().and_then(|n| outputs.remove(n));
        let mut presents = Vec::with_capacity(d.num_layers);
        for i in 0..d.num_layers {
            let kn = Decoder::layer_name(&d.present_key, i);
            let vn = Decoder::layer_name(&d.present_value, i);
            let k = outputs.remove(&kn);
            let v = outputs.remove(&vn);
            match (k, v) {
                (Some(k), Some(v)) => presents.push((k, v)),
                _ => return Err(err(format!("no output `{kn}` / `{vn}`"))),
            }
        }
        Ok(DecoderOutput {
            logits,
            hidden_states,
            presents,
        })
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
