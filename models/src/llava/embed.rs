//! Prompt assembly and embedding: token ids, image features from the vision encoder
//! (cached per image), the embedding table, and the splicing of features in place of
//! the `<image>` token.
use super::*;
use crate::device::run_guard;

impl Llava {
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
        // Each question's opening ids (its conversation before any solution text).
        let mut openings: HashMap<String, Vec<i64>> = HashMap::new();
        for (i, (question, partial)) in items.iter().enumerate() {
            let text = tsst_labels::conversation(question, partial);
            let ids = match self.tokenizer.encode(&text) {
                Ok(ids) => ids,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    continue;
                }
            };
            // Only where stems serve: otherwise a second tokenization per prompt for
            // nothing.
            let stem = if self.stems_on() {
                let opening = openings
                    .entry(tsst_labels::conversation(question, ""))
                    .or_insert_with_key(|text| self.tokenizer.encode(text).unwrap_or_default());
                shared_ids(opening.iter(), &ids).min(ids.len().saturating_sub(1))
            } else {
                0
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
                        stem,
                    })),
                    None => {
                        pending.push((i, path.clone()));
                        out.push(Ok(Prompt {
                            ids,
                            features: None,
                            stem,
                        }));
                    }
                }
            } else {
                out.push(Ok(Prompt {
                    ids,
                    features: None,
                    stem,
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
            let mut outputs = {
                let _guard = run_guard();
                self.vision.run(vec![(v.input.as_str(), input)])
            }
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
        self.feature_bytes = 0;
    }

    fn remember(&mut self, path: PathBuf, features: Arc<Vec<f32>>) {
        let bytes = features.len() * std::mem::size_of::<f32>();
        match self.features.insert(path.clone(), features) {
            Some(old) => self.feature_bytes -= old.len() * std::mem::size_of::<f32>(),
            None => self.feature_order.push_back(path),
        }
        self.feature_bytes += bytes;
        // The newest stays even alone over the limit.
        while self.feature_bytes > FEATURE_CACHE_BYTES && self.feature_order.len() > 1 {
            if let Some(old) = self.feature_order.pop_front() {
                if let Some(f) = self.features.remove(&old) {
                    self.feature_bytes -= f.len() * std::mem::size_of::<f32>();
                }
            }
        }
    }

    /// Positions a prompt takes in the decoder: its ids, with the image token
    /// replaced by the image's rows.
    pub fn embedded_len(&self, prompt: &Prompt) -> usize {
        self.positions_of(&prompt.ids)
    }

    /// Positions `ids` take in the decoder, the image token counted as the image's rows.
    pub fn positions_of(&self, ids: &[i64]) -> usize {
        let images = ids
            .iter()
            .filter(|&&id| id == self.manifest.special_tokens.image)
            .count();
        ids.len() - images + images * self.manifest.vision.num_image_tokens
    }

    /// Embeds `ids` (`[rows, seq]`, padded with the pad id) with embed.onnx and returns
    /// `rows * seq * hidden` values.
    pub fn embed_ids(&mut self, ids: Vec<i64>, rows: usize) -> Result<Vec<f32>, ModelError> {
        let e = self.manifest.embed.clone();
        let hidden = self.hidden_size();
        let seq = ids.len().checked_div(rows).unwrap_or(0);
        let input = tensor::ints(vec![rows as i64, seq as i64], ids)
            .map_err(|err| self.run_error(&e.file, err))?;
        let mut outputs = {
            let _guard = run_guard();
            self.embed.run(vec![(e.input.as_str(), input)])
        }
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
        // Every prompt's ids one after another in a single row: the lookup is per
        // token, and padding each prompt to the longest would bring back (device to
        // host, as float32) a row of `hidden` values per pad, which for a value
        // call's rests of very different lengths was most of what came back.
        // The image id may lie outside the embedding table; its row is replaced, so
        // the pad id stands in for it.
        let mut ids = Vec::with_capacity(prompts.iter().map(|p| p.ids.len()).sum());
        for p in prompts {
            ids.extend(
                p.ids
                    .iter()
                    .map(|&id| if id == special.image { special.pad } else { id }),
            );
        }
        let table = if ids.is_empty() {
            Vec::new()
        } else {
            self.embed_ids(ids, 1)?
        };
        let mut out = Vec::with_capacity(prompts.len());
        let mut start = 0;
        for p in prompts {
            let mut rows = Vec::with_capacity(self.embedded_len(p) * hidden);
            for (t, &id) in p.ids.iter().enumerate() {
                if id == special.image {
                    let features = p.features.as_ref().ok_or_else(|| {
                        ModelError::run(&self.label(), "an image token without image features")
                    })?;
                    rows.extend_from_slice(features);
                } else {
                    let at = (start + t) * hidden;
                    rows.extend_from_slice(&table[at..at + hidden]);
                }
            }
            start += p.ids.len();
            out.push(rows);
        }
        Ok(out)
    }

    /// Embeds one token per row for a decode step; in the bound modes the embeddings
    /// stay on the device.
    pub(super) fn embed_step(&mut self, ids: Vec<i64>) -> Result<DynValue, ModelError> {
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
            let mut outputs = {
                let _guard = run_guard();
                self.embed.run_binding(&binding)
            }
            .map_err(|err| ModelError::run(&e.file, err))?;
            outputs.remove(&e.output)
        } else {
            let mut outputs = {
                let _guard = run_guard();
                self.embed.run(vec![(e.input.as_str(), input)])
            }
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

    /// Embeds one token per row for a decode step straight into `out` (`[rows, 1,
    /// hidden]` on the device: a CUDA graph's own input buffer).
    pub(super) fn embed_into(
        &mut self,
        ids: Vec<i64>,
        out: &mut ort::value::DynTensor,
    ) -> Result<(), ModelError> {
        let e = self.manifest.embed.clone();
        let err = |err: ort::Error| ModelError::run(&e.file, err);
        let input = tensor::ints(vec![ids.len() as i64, 1], ids)
            .map_err(|err| self.run_error(&e.file, err))?;
        let mut binding = self.embed.create_binding().map_err(err)?;
        binding
            .bind_input(e.input.as_str(), &input)
            .and_then(|_| binding.bind_output(e.output.as_str(), out))
            .map_err(err)?;
        let _guard = run_guard();
        self.embed.run_binding(&binding).map(drop).map_err(err)
    }
}
