//! Choosing the next token on the device: the sampler graph and row picks.
use super::*;
use crate::device::run_guard;

impl Llava {
    /// One token per row from `[rows, 1, vocab]` logits on the decoder's device, with
    /// the sample graph: only tokens and log-probabilities cross to the host.
    pub(super) fn sample(
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
        let outputs = {
            let _guard = run_guard();
            session.run(inputs)
        }
        .map_err(|e| err(e.to_string()))?;
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
    pub(super) fn pick(
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
        let mut outputs = {
            let _guard = run_guard();
            session.run(vec![
                (ops::PICK_INPUT, SessionInputValue::from(value)),
                (ops::PICK_INDEX, SessionInputValue::from(idx)),
            ])
        }
        .map_err(|e| err(e.to_string()))?;
        let rows = outputs
            .remove(ops::PICK_OUTPUT)
            .ok_or_else(|| err("the pick graph returned nothing".into()))?;
        let (_, data) = tensor::read(&rows).map_err(err)?;
        Ok(data.chunks(w.max(1)).map(<[f32]>::to_vec).collect())
    }
}
