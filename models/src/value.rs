//! The value model: the decoder's final hidden state at the last real position of
//! `conversation(question, text)`, through the value head, one scalar per request.
use crate::device::{open_session, Device};
use crate::error::ModelError;
use crate::llava::{Llava, Prompt};
use crate::manifest::{Kind, ValueHead};
use crate::memory;
use crate::tensor;
use ort::session::Session;
use ort::value::TensorElementType;
use std::path::Path;
use tsst_backend::{BackendError, RequestError, ScoreRequest, ValueBackend};

/// Texts scored per decoder run.
const SCORE_BATCH: usize = 8;

pub struct OnnxValue {
    model: Llava,
    head: Session,
    spec: ValueHead,
    head_type: TensorElementType,
    /// Whether the head takes `[batch, hidden]` (else `[batch, 1, hidden]`).
    head_rank2: bool,
}

impl OnnxValue {
    pub fn load(dir: &Path, device: Device, ort_lib: Option<&Path>) -> Result<Self, ModelError> {
        let model = Llava::load(dir, Kind::Value, device, ort_lib)?;
        let spec = model
            .manifest
            .value_head
            .clone()
            .ok_or_else(|| ModelError::Manifest {
                path: dir.join(crate::manifest::FILE),
                reason: "field `value_head` is required for a value model".into(),
            })?;
        let env = crate::ort_lib::environment(ort_lib, device.is_gpu())?;
        let file = dir.join(&spec.file);
        let head = open_session(&env, device, &file)?;
        let bad = |reason: String| ModelError::Load {
            path: file.clone(),
            reason,
        };
        let head_type = tensor::input_type(&head, &spec.input).map_err(bad)?;
        let rank = head
            .inputs()
            .iter()
            .find(|o| o.name() == spec.input)
            .and_then(|o| o.dtype().tensor_shape().map(|s| s.len()))
            .unwrap_or(2);
        Ok(OnnxValue {
            model,
            head,
            spec,
            head_type,
            head_rank2: rank != 3,
        })
    }

    pub fn model(&mut self) -> &mut Llava {
        &mut self.model
    }

    /// Scores `(question, text)` pairs; a request whose prompt cannot be built fails
    /// alone.
    pub fn values(
        &mut self,
        batch: &[ScoreRequest<'_>],
    ) -> Result<Vec<Result<f64, RequestError>>, ModelError> {
        let items: Vec<_> = batch.iter().map(|r| (r.question, r.text)).collect();
        let prompts = self.model.prompts(&items)?;
        let max_length = self.model.manifest.decoder.max_length;
        let mut out: Vec<Result<f64, RequestError>> = Vec::with_capacity(batch.len());
        let mut live: Vec<(usize, Prompt)> = Vec::new();
        for (i, prompt) in prompts.into_iter().enumerate() {
            match prompt {
                Ok(p) => {
                    let len = self.model.embedded_len(&p);
                    if len > max_length {
                        out.push(Err(RequestError(format!(
                            "the text takes {len} positions; the model takes at most {max_length}"
                        ))));
                    } else {
                        out.push(Err(RequestError("not scored".into())));
                        live.push((i, p));
                    }
                }
                Err(e) => out.push(Err(RequestError(e))),
            }
        }
        // Chunks of SCORE_BATCH texts; a chunk the device has no memory for is
        // scored in halves (the policy on the same device may hold the memory for a
        // moment), down to one text.
        let (mut start, mut size) = (0, SCORE_BATCH);
        while start < live.len() {
            let chunk = &live[start..(start + size).min(live.len())];
            let refs: Vec<&Prompt> = chunk.iter().map(|(_, p)| p).collect();
            match self.score_prompts(&refs) {
                Ok(values) => {
                    for ((i, _), v) in chunk.iter().zip(values) {
                        out[*i] = Ok(v);
                    }
                    start += chunk.len();
                }
                Err(e) if size > 1 && memory::is_out_of_memory(&e.to_string()) => {
                    size /= 2;
                    tracing::warn!(texts = size, error = %e, "out of device memory; scoring fewer texts at once");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn score_prompts(&mut self, prompts: &[&Prompt]) -> Result<Vec<f64>, ModelError> {
        let hidden = self.model.hidden_size();
        let (_, run) = self.model.prefill_last(prompts)?;
        let last = run.picked;
        let rows = last.len();
        let shape = if self.head_rank2 {
            vec![rows as i64, hidden as i64]
        } else {
            vec![rows as i64, 1, hidden as i64]
        };
        let input = tensor::floats(self.head_type, shape, last.concat())
            .map_err(|e| ModelError::run(&self.spec.file, e))?;
        let mut outputs = self
            .head
            .run(vec![(self.spec.input.as_str(), input)])
            .map_err(|e| ModelError::run(&self.spec.file, e))?;
        let value = outputs.remove(&self.spec.output).ok_or_else(|| {
            ModelError::run(&self.spec.file, format!("no output `{}`", self.spec.output))
        })?;
        let (_, data) = tensor::read(&value).map_err(|e| ModelError::run(&self.spec.file, e))?;
        if data.len() != rows {
            return Err(ModelError::run(
                &self.spec.file,
                format!("{} values for {rows} texts", data.len()),
            ));
        }
        Ok(data.into_iter().map(f64::from).collect())
    }
}

impl ValueBackend for OnnxValue {
    fn name(&self) -> String {
        format!("onnx value {}", self.model.label())
    }

    fn score(
        &mut self,
        batch: &[ScoreRequest<'_>],
    ) -> Result<Vec<Result<f64, RequestError>>, BackendError> {
        self.values(batch).map_err(|e| BackendError {
            backend: self.name(),
            reason: e.to_string(),
        })
    }
}
