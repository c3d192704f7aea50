//! Reading a YAML file into a serde type, turning parser errors into [`ConfigError`]s
//! that name the file, the position and, where the parser does not, the field.
use crate::error::{ConfigError, Position};
use crate::secret::redact_secrets;
use serde::de::DeserializeOwned;
use std::path::Path;

/// Reads `path` as UTF-8 text; every failure names the file.
pub(crate) fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses `text` (the contents of `origin`) as one YAML document of type `T`.
pub(crate) fn parse<T: DeserializeOwned>(text: &str, origin: &Path) -> Result<T, ConfigError> {
    serde_saphyr::from_str::<T>(text).map_err(|err| parse_error(&err, text, origin))
}

fn parse_error(err: &serde_saphyr::Error, text: &str, origin: &Path) -> ConfigError {
    use serde_saphyr::MessageFormatter;
    // The library's own Display can quote source lines in a snippet; building the
    // message from parts keeps file contents (and any secret in them) out of it.
    let raw = serde_saphyr::DefaultMessageFormatter.format_message(err.without_snippet());
    let message: String = raw
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let position = err.location().filter(|l| l.line() > 0).map(|l| Position {
        line: l.line(),
        column: l.column(),
    });
    let scalar = position.and_then(|p| scalar_at(text, p));
    let message = redact_secrets(&explain(&message, scalar.as_deref()));
    let field = position
        .and_then(|p| field_path_at(text, p.line, p.column))
        .filter(|f| !f.is_empty());
    ConfigError::Parse {
        path: origin.to_path_buf(),
        position,
        field,
        message,
    }
}

/// The library's terse type errors ("invalid u32") in the words of the config file,
/// with the value the user wrote.
fn explain(message: &str, scalar: Option<&str>) -> String {
    let expected = match message.trim() {
        "invalid u16" | "invalid u32" | "invalid u64" | "invalid usize" => {
            "expected a whole number >= 0"
        }
        "invalid f32" | "invalid f64" => "expected a number",
        "invalid boolean" => "expected true or false",
        _ => return message.to_string(),
    };
    match scalar {
        Some(v) => format!("{expected} (got `{v}`)"),
        None => expected.to_string(),
    }
}

/// The plain scalar starting at a 1-based position, without a trailing comment.
fn scalar_at(text: &str, p: Position) -> Option<String> {
    let line = text
        .lines()
        .nth(usize::try_from(p.line).ok()?.checked_sub(1)?)?;
    let start = usize::try_from(p.column).ok()?.checked_sub(1)?;
    let rest: String = line.chars().skip(start).collect();
    let value = rest.split(" #").next().unwrap_or("").trim();
    let short: String = value.chars().take(60).collect();
    (!short.is_empty()).then_some(short)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TokKind {
    Dash,
    Key(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Tok {
    col: usize,
    kind: TokKind,
}

/// Block-structure tokens of one line: the `- ` item markers and the mapping key, with
/// their 0-based character columns. Flow collections and multi-line scalars are not
/// understood; the caller only uses this for a best-effort field name.
fn tokens(line: &str) -> Vec<Tok> {
    let chars: Vec<char> = line.chars().collect();
    let mut pos = chars.iter().take_while(|c| **c == ' ').count();
    let mut out = Vec::new();
    loop {
        let rest: String = chars[pos.min(chars.len())..].iter().collect();
        if rest.is_empty() || rest.starts_with('#') {
            return out;
        }
        if rest == "-" || rest.starts_with("- ") {
            out.push(Tok {
                col: pos,
                kind: TokKind::Dash,
            });
            pos += 1;
            pos += chars[pos.min(chars.len())..]
                .iter()
                .take_while(|c| **c == ' ')
                .count();
            continue;
        }
        if let Some(key) = plain_key(&rest) {
            out.push(Tok {
                col: pos,
                kind: TokKind::Key(key),
            });
        }
        return out;
    }
}

fn plain_key(rest: &str) -> Option<String> {
    let end = rest
        .find(": ")
        .or_else(|| rest.strip_suffix(':').map(str::len))?;
    let key = rest[..end].trim();
    let key = key
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .or_else(|| key.strip_prefix('\'').and_then(|k| k.strip_suffix('\'')))
        .unwrap_or(key);
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
    ok.then(|| key.to_string())
}

/// The dotted path (`models[1].tag`) of the node at a 1-based `line`/`column`,
/// recovered from indentation. Used because serde's type errors ("invalid type:
/// string, expected u32") do not say which field they are about.
pub(crate) fn field_path_at(text: &str, line: u64, column: u64) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut idx = usize::try_from(line).ok()?.checked_sub(1)?;
    let col0 = usize::try_from(column).ok()?.saturating_sub(1);
    // Tokens left of the error position on its own line are its innermost ancestors.
    let mut pending: Vec<Tok> = tokens(lines.get(idx)?)
        .into_iter()
        .filter(|t| t.col < col0)
        .collect();
    let mut min_col = pending.first().map_or(col0, |t| t.col);
    let mut segs: Vec<String> = Vec::new();
    loop {
        while let Some(tok) = pending.pop() {
            match tok.kind {
                TokKind::Key(k) => segs.push(k),
                TokKind::Dash => segs.push(format!("[{}]", item_index(&lines, idx, tok.col))),
            }
        }
        // The parent is the nearest line above that starts further left.
        let parent = (0..idx).rev().find_map(|j| {
            let toks = tokens(lines[j]);
            let first = toks.first()?.col;
            (first < min_col).then_some((j, toks))
        });
        let Some((j, toks)) = parent else { break };
        idx = j;
        pending = toks.into_iter().filter(|t| t.col < min_col).collect();
        min_col = pending.first().map_or(min_col, |t| t.col);
    }
    let mut out = String::new();
    for seg in segs.iter().rev() {
        if !out.is_empty() && !seg.starts_with('[') {
            out.push('.');
        }
        out.push_str(seg);
    }
    Some(out)
}

/// How many sibling items at column `col` precede the item on line `idx`.
fn item_index(lines: &[&str], idx: usize, col: usize) -> usize {
    let mut n = 0;
    for line in lines[..idx].iter().rev() {
        let Some(first) = tokens(line).into_iter().next() else {
            continue;
        };
        if first.col < col {
            break;
        }
        if first.col == col && first.kind == TokKind::Dash {
            n += 1;
        }
    }
    n
}

/// Keys of the top-level block mapping, for telling file kinds apart.
pub(crate) fn top_level_keys(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| match tokens(l).into_iter().next() {
            Some(Tok {
                col: 0,
                kind: TokKind::Key(k),
            }) => Some(k),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
task: x
models:
  - policy_model: a
    tag: base
  - policy_model: b
    # a comment
    tag: other
    run_flag: maybe
roles:
  - generator
  - bogus
config:
  concurrency: lots
";

    #[test]
    fn finds_nested_paths() {
        assert_eq!(field_path_at(DOC, 1, 7).as_deref(), Some("task"));
        assert_eq!(field_path_at(DOC, 4, 10).as_deref(), Some("models[0].tag"));
        assert_eq!(
            field_path_at(DOC, 8, 15).as_deref(),
            Some("models[1].run_flag")
        );
        assert_eq!(field_path_at(DOC, 11, 5).as_deref(), Some("roles[1]"));
        assert_eq!(
            field_path_at(DOC, 13, 16).as_deref(),
            Some("config.concurrency")
        );
    }

    #[test]
    fn key_position_gives_parent() {
        assert_eq!(field_path_at(DOC, 7, 5).as_deref(), Some("models[1]"));
        assert_eq!(field_path_at(DOC, 1, 1).as_deref(), Some(""));
    }
}
