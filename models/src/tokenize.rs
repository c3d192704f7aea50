//! Prompt token ids and decoding with the exported `tokenizer.json`.
use crate::error::ModelError;
use crate::manifest::SpecialTokens;
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;
use tsst_labels::prompt::IMAGE_TOKEN;

pub struct PromptTokenizer {
    inner: Tokenizer,
    path: PathBuf,
    special: SpecialTokens,
    add_bos: bool,
    /// Whether the tokenizer itself maps `<image>` to the image id; if not, the text
    /// is split at `<image>` and the id inserted, as LLaVA's `tokenizer_image_token`
    /// does.
    knows_image: bool,
}

impl PromptTokenizer {
    pub fn load(path: &Path, special: SpecialTokens, add_bos: bool) -> Result<Self, ModelError> {
        let inner = Tokenizer::from_file(path).map_err(|e| ModelError::Tokenizer {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let knows_image = inner
            .token_to_id(IMAGE_TOKEN)
            .is_some_and(|id| i64::from(id) == special.image);
        Ok(PromptTokenizer {
            inner,
            path: path.to_path_buf(),
            special,
            add_bos,
            knows_image,
        })
    }

    fn error(&self, e: impl std::fmt::Display) -> ModelError {
        ModelError::Tokenizer {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    fn encode_plain(&self, text: &str) -> Result<Vec<i64>, ModelError> {
        // Special tokens (BOS) are added here per the manifest, not by the
        // tokenizer's post-processor, so a tokenizer with or without one gives the
        // same ids.
        let enc = self.inner.encode(text, false).map_err(|e| self.error(e))?;
        Ok(enc.get_ids().iter().map(|&id| i64::from(id)).collect())
    }

    /// The prompt's ids: BOS (per the manifest), then the text with each `<image>`
    /// as the image id.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>, ModelError> {
        let mut ids = Vec::new();
        if self.add_bos {
            ids.push(self.special.bos);
        }
        if self.knows_image {
            ids.extend(self.encode_plain(text)?);
            return Ok(ids);
        }
        for (i, chunk) in text.split(IMAGE_TOKEN).enumerate() {
            if i > 0 {
                ids.push(self.special.image);
            }
            if !chunk.is_empty() {
                ids.extend(self.encode_plain(chunk)?);
            }
        }
        Ok(ids)
    }

    /// The text of generated ids, special tokens left out.
    pub fn decode(&self, ids: &[i64]) -> Result<String, ModelError> {
        let ids: Vec<u32> = ids
            .iter()
            .filter_map(|&id| u32::try_from(id).ok())
            .collect();
        self.inner.decode(&ids, true).map_err(|e| self.error(e))
    }

    pub fn special(&self) -> SpecialTokens {
        self.special
    }
}
