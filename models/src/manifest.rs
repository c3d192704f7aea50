//! `manifest.json` of an exported model directory (format `tsst-llava-onnx/1`): which
//! files hold the vision encoder, the embeddings, the decoder and the value head, the
//! tensor names they use and the preprocessing constants.
use crate::error::ModelError;
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "tsst-llava-onnx/1";
pub const FILE: &str = "manifest.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Policy,
    Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    Float32,
    Float16,
}

/// How the decoder was exported, which decides how padding and positions are fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// onnxruntime-genai's model builder: rotary positions come from the attention
    /// mask (GroupQueryAttention), which must be right-padded ones.
    Genai,
    /// `torch.onnx.export`: explicit `position_ids`, the cache is concatenated.
    Torch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct SpecialTokens {
    pub bos: i64,
    pub eos: i64,
    pub pad: i64,
    pub image: i64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Vision {
    pub file: String,
    pub input: String,
    pub output: String,
    pub image_size: u32,
    pub num_image_tokens: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub pad_color: [u8; 3],
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Embed {
    pub file: String,
    pub input: String,
    pub output: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Decoder {
    pub file: String,
    pub route: Route,
    pub inputs_embeds: String,
    pub attention_mask: String,
    #[serde(default)]
    pub position_ids: Option<String>,
    pub past_key: String,
    pub past_value: String,
    pub present_key: String,
    pub present_value: String,
    #[serde(default)]
    pub logits: Option<String>,
    #[serde(default)]
    pub hidden_states: Option<String>,
    pub num_layers: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub hidden_size: usize,
    pub vocab_size: usize,
    pub max_length: usize,
}

impl Decoder {
    /// The tensor name for layer `i` from a `{i}` pattern.
    pub fn layer_name(pattern: &str, i: usize) -> String {
        pattern.replace("{i}", &i.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ValueHead {
    pub file: String,
    pub input: String,
    pub output: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub kind: Kind,
    pub dtype: Dtype,
    pub template: String,
    pub tokenizer: String,
    pub special_tokens: SpecialTokens,
    pub add_bos: bool,
    pub vision: Vision,
    pub embed: Embed,
    pub decoder: Decoder,
    #[serde(default)]
    pub value_head: Option<ValueHead>,
}

impl Manifest {
    /// Reads and checks `dir/manifest.json`.
    pub fn load(dir: &Path) -> Result<Manifest, ModelError> {
        let path = dir.join(FILE);
        let bad = |reason: String| ModelError::Manifest {
            path: path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            bad(format!(
                "{e} (an exported model directory must contain {FILE})"
            ))
        })?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        manifest.check().map_err(bad)?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "field `format` is `{}`, expected `{FORMAT}`",
                self.format
            ));
        }
        if self.template != "llava_v1" {
            return Err(format!(
                "field `template` is `{}`; only `llava_v1` is supported",
                self.template
            ));
        }
        let d = &self.decoder;
        for (field, value) in [
            ("decoder.num_layers", d.num_layers),
            ("decoder.num_kv_heads", d.num_kv_heads),
            ("decoder.head_dim", d.head_dim),
            ("decoder.hidden_size", d.hidden_size),
            ("decoder.vocab_size", d.vocab_size),
            ("decoder.max_length", d.max_length),
            ("vision.num_image_tokens", self.vision.num_image_tokens),
            ("vision.image_size", self.vision.image_size as usize),
        ] {
            if value == 0 {
                return Err(format!("field `{field}` must be positive"));
            }
        }
        if self.vision.std.contains(&0.0) {
            return Err("field `vision.std` has a zero".into());
        }
        for (field, pattern) in [
            ("decoder.past_key", &d.past_key),
            ("decoder.past_value", &d.past_value),
            ("decoder.present_key", &d.present_key),
            ("decoder.present_value", &d.present_value),
        ] {
            if !pattern.contains("{i}") {
                return Err(format!("field `{field}` must contain `{{i}}` (the layer)"));
            }
        }
        match (d.route, &d.position_ids) {
            (Route::Torch, None) => {
                return Err("field `decoder.position_ids` is required for route `torch`".into())
            }
            (Route::Genai, Some(_)) => {
                return Err(
                    "field `decoder.position_ids` must be null for route `genai` (positions \
                     come from the attention mask)"
                        .into(),
                )
            }
            _ => {}
        }
        match self.kind {
            Kind::Policy if d.logits.is_none() => {
                Err("field `decoder.logits` is required for a policy model".into())
            }
            Kind::Value if d.hidden_states.is_none() => {
                Err("field `decoder.hidden_states` is required for a value model".into())
            }
            Kind::Value if self.value_head.is_none() => {
                Err("field `value_head` is required for a value model".into())
            }
            _ => Ok(()),
        }
    }

    pub fn file(&self, dir: &Path, name: &str) -> PathBuf {
        dir.join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: &str) -> serde_json::Value {
        serde_json::json!({
            "format": "tsst-llava-onnx/1", "kind": kind, "dtype": "float32",
            "template": "llava_v1", "tokenizer": "tokenizer.json",
            "special_tokens": {"bos": 1, "eos": 2, "pad": 0, "image": 300},
            "add_bos": true,
            "vision": {"file": "vision.onnx", "input": "pixel_values", "output": "image_features",
                "image_size": 56, "num_image_tokens": 16,
                "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                "pad_color": [122, 116, 104]},
            "embed": {"file": "embed.onnx", "input": "input_ids", "output": "inputs_embeds"},
            "decoder": {"file": "decoder.onnx", "route": "genai", "inputs_embeds": "inputs_embeds",
                "attention_mask": "attention_mask", "position_ids": null,
                "past_key": "past_key_values.{i}.key", "past_value": "past_key_values.{i}.value",
                "present_key": "present.{i}.key", "present_value": "present.{i}.value",
                "logits": "logits", "hidden_states": null, "num_layers": 2, "num_kv_heads": 2,
                "head_dim": 16, "hidden_size": 64, "vocab_size": 400, "max_length": 2048},
            "value_head": null
        })
    }

    fn write(value: &serde_json::Value) -> (std::path::PathBuf, Result<Manifest, ModelError>) {
        let dir = std::env::temp_dir().join(format!(
            "tsst-manifest-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(FILE), value.to_string()).unwrap();
        let loaded = Manifest::load(&dir);
        (dir, loaded)
    }

    #[test]
    fn parses_the_contract() {
        let (_, m) = write(&sample("policy"));
        let m = m.unwrap();
        assert_eq!(m.decoder.route, Route::Genai);
        assert_eq!(m.special_tokens.image, 300);
        assert_eq!(
            Decoder::layer_name(&m.decoder.past_key, 1),
            "past_key_values.1.key"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let mut v = sample("value");
        let (_, m) = write(&v);
        let err = m.unwrap_err().to_string();
        assert!(err.contains("decoder.hidden_states"), "{err}");
        v["format"] = "other/2".into();
        let (_, m) = write(&v);
        assert!(m.unwrap_err().to_string().contains("`format`"));
        let mut v = sample("policy");
        v["decoder"]["route"] = "torch".into();
        let (_, m) = write(&v);
        assert!(m.unwrap_err().to_string().contains("position_ids"));
        let (_, m) = write(&serde_json::json!({"format": 1}));
        assert!(m.unwrap_err().to_string().contains(FILE));
    }

    #[test]
    fn missing_manifest_says_what_a_model_dir_needs() {
        let err = Manifest::load(Path::new("/nonexistent/model")).unwrap_err();
        assert!(
            err.to_string().contains("must contain manifest.json"),
            "{err}"
        );
    }
}
