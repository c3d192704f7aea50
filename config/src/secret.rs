//! Keeping API keys and passwords out of files, logs and error messages.
use std::fmt;

/// A credential read from the environment. Its `Debug` and `Display` print `***`, so
/// it can sit in structs that get logged; call [`Secret::expose`] only where the
/// value is sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The credential itself, for the one place that puts it in a request header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `UPPER_SNAKE_CASE`, the shape of an environment variable name users are told to write.
pub(crate) fn is_env_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Whether `s` looks like a credential rather than a name: a known key prefix, or a
/// long token with many letters and digits that is neither an environment variable
/// name nor a path or model id (those contain `/`). A heuristic: it errs towards
/// hiding, since hiding a harmless word costs little.
pub(crate) fn looks_like_secret(s: &str) -> bool {
    let s = s.trim();
    const PREFIXES: [&str; 7] = ["sk-", "sk_", "hf_", "gsk_", "xai-", "pk-", "Bearer "];
    if PREFIXES.iter().any(|p| s.starts_with(p)) {
        return true;
    }
    let digits = s.chars().filter(char::is_ascii_digit).count();
    let letters = s.chars().filter(char::is_ascii_alphabetic).count();
    s.chars().count() >= 20
        && digits >= 4
        && letters >= 4
        && !s.contains('/')
        && !s.contains(char::is_whitespace)
        && !is_env_var_name(s)
}

/// Replaces every secret-looking word of a message with `***`. Parser messages quote
/// the offending value ("invalid type: string \"sk-...\""), and a key pasted into the
/// wrong field must not reach a terminal or a log through them.
pub(crate) fn redact_secrets(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if looks_like_secret(word) {
            out.push_str("***");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in message.chars() {
        if c.is_whitespace() || matches!(c, '"' | '\'' | '`' | ',' | '(' | ')' | '[' | ']') {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("sk-live-123");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "sk-live-123");
    }

    #[test]
    fn detects_keys_not_names() {
        assert!(looks_like_secret("sk-abc"));
        assert!(looks_like_secret("a8f3kq93jf93kdj3ks9e2kd"));
        assert!(!looks_like_secret("TSST_VERIFIER_API_KEY"));
        assert!(!looks_like_secret("OPENAI_API_KEY"));
        assert!(!looks_like_secret("meta-llama/Meta-Llama-3-70B-Instruct"));
        assert!(!looks_like_secret("Meta-Llama-3-70B-Instruct"));
        assert!(!looks_like_secret("checkpoints/llava-v1.5-7b-policy-onnx"));
        assert!(is_env_var_name("TSST_VERIFIER_API_KEY"));
        assert!(!is_env_var_name("tsst_key"));
        assert!(!is_env_var_name("1ABC"));
    }

    #[test]
    fn redacts_quoted_keys() {
        let m = redact_secrets("invalid type: string \"sk-secret-value\", expected u32");
        assert_eq!(m, "invalid type: string \"***\", expected u32");
    }
}
