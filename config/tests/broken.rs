//! Each file under tests/broken/ breaks one rule. Its header says what the error must
//! name (`# expect-field: FIELD`) and, for secrets, what it must never print
//! (`# must-not-show: VALUE`). The message must also name the file.
use std::path::PathBuf;
use tsst_config::{check_file, ConfigError};

struct Case {
    path: PathBuf,
    field: String,
    hidden: Vec<String>,
}

fn cases() -> Vec<Case> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/broken");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        let header = |key: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
                .collect()
        };
        let field = header("# expect-field:")
            .pop()
            .unwrap_or_else(|| panic!("{} lacks '# expect-field:'", path.display()));
        out.push(Case {
            hidden: header("# must-not-show:"),
            path,
            field,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

#[test]
fn every_broken_config_fails_naming_file_and_field() {
    let cases = cases();
    assert!(cases.len() >= 20, "only {} broken configs", cases.len());
    for case in cases {
        let err = match check_file(&case.path) {
            Ok(kind) => panic!("{} passed check as {kind}", case.path.display()),
            Err(e) => e,
        };
        let msg = err.to_string();
        let file = case.path.display().to_string();
        assert!(
            msg.contains(&file),
            "message does not name the file:\n{msg}"
        );
        assert!(
            msg.contains(&case.field),
            "message does not name `{}`:\n{msg}",
            case.field
        );
        for secret in &case.hidden {
            assert!(
                !msg.contains(secret.as_str()),
                "message shows a secret:\n{msg}"
            );
            assert!(
                !format!("{err:?}").contains(secret.as_str()),
                "Debug shows a secret"
            );
        }
    }
}

#[test]
fn parse_errors_carry_line_and_column() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/broken");
    for (name, field, line) in [
        ("eval_wrong_type.yaml", "branch", 10),
        ("eval_nested_wrong_type.yaml", "models[1].run_flag", 18),
        ("eval_unknown_field.yaml", "num_beam", 10),
    ] {
        let path = dir.join(name);
        match check_file(&path) {
            Err(ConfigError::Parse {
                position: Some(p),
                message,
                field: found,
                ..
            }) => {
                assert_eq!(p.line, line, "{name}: {message}");
                let named = found.as_deref() == Some(field) || message.contains(field);
                assert!(named, "{name}: {found:?} {message}");
                let msg = check_file(&path)
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                let prefix = format!("{}:{line}:", path.display());
                assert!(msg.starts_with(&prefix), "{msg}");
            }
            other => panic!("{name}: expected a parse error with a position, got {other:?}"),
        }
    }
}

#[test]
fn rule_errors_read_file_field_rule() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/broken/eval_branch_zero.yaml");
    let msg = check_file(&path)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert_eq!(
        msg,
        format!("{}: branch: must be >= 1 (got 0)", path.display())
    );
    let path = path.with_file_name("eval_duplicate_tag.yaml");
    let msg = check_file(&path)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert_eq!(
        msg,
        format!("{}: models[1].tag: duplicate tag \"base\"", path.display())
    );
}
