//! Runs one training-round command: an argument list (never a shell, so nothing in a
//! path or a data file name is interpreted), its output lines streamed into tracing,
//! stopped at its timeout.
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tsst_config::{expand_placeholders, Stage};

/// The values a stage's arguments may name.
pub type Placeholders = BTreeMap<&'static str, String>;

#[derive(Debug, Error)]
pub enum CommandError {
    #[error("stage {stage}: cannot start {program}: {source}")]
    Spawn {
        stage: String,
        program: String,
        source: std::io::Error,
    },
    #[error("stage {stage}: stopped after its timeout of {secs} s")]
    Timeout { stage: String, secs: u64 },
    #[error("stage {stage}: exited with {status}")]
    Failed { stage: String, status: String },
    #[error("stage {stage}: argument `{arg}` names an unknown placeholder {{{name}}}")]
    Placeholder {
        stage: String,
        arg: String,
        name: String,
    },
    #[error("stage {stage}: waiting for the command failed: {source}")]
    Wait {
        stage: String,
        source: std::io::Error,
    },
}

/// How a stage ended.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    pub exit_code: Option<i32>,
}

/// `arg` with every `{name}` replaced; an unknown name is an error (a typo would
/// otherwise reach the training command as a literal path).
pub fn expand(stage: &str, arg: &str, values: &Placeholders) -> Result<String, CommandError> {
    expand_placeholders(arg, |name| values.get(name).map(String::as_str)).map_err(|name| {
        CommandError::Placeholder {
            stage: stage.to_owned(),
            arg: arg.to_owned(),
            name,
        }
    })
}

/// Runs `stage` to its end or its timeout. Output lines go to tracing (stdout at
/// info, stderr at warn), tagged with the stage's name.
pub async fn run(stage: &Stage, values: &Placeholders) -> Result<Finished, CommandError> {
    let args = stage
        .args
        .iter()
        .map(|a| expand(&stage.name, a, values))
        .collect::<Result<Vec<_>, _>>()?;
    let mut child = Command::new(&stage.program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A trainer that is itself stopped takes its command with it.
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| CommandError::Spawn {
            stage: stage.name.clone(),
            program: stage.program.display().to_string(),
            source,
        })?;
    tracing::info!(stage = %stage.name, program = %stage.program.display(), "training stage started");
    let out = tokio::spawn(stream(child.stdout.take(), stage.name.clone(), false));
    let err = tokio::spawn(stream(child.stderr.take(), stage.name.clone(), true));
    let limit = Duration::from_secs(stage.timeout_secs);
    let status = match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => status.map_err(|source| CommandError::Wait {
            stage: stage.name.clone(),
            source,
        })?,
        Err(_) => {
            // SIGKILL; the pipes close with it, which ends the two streams.
            let _ = child.kill().await;
            return Err(CommandError::Timeout {
                stage: stage.name.clone(),
                secs: stage.timeout_secs,
            });
        }
    };
    let _ = out.await;
    let _ = err.await;
    if !status.success() {
        return Err(CommandError::Failed {
            stage: stage.name.clone(),
            status: status.to_string(),
        });
    }
    Ok(Finished {
        exit_code: status.code(),
    })
}

async fn stream<R: AsyncRead + Unpin>(pipe: Option<R>, stage: String, stderr: bool) {
    let Some(pipe) = pipe else { return };
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if stderr {
            tracing::warn!(stage = %stage, "{line}");
        } else {
            tracing::info!(stage = %stage, "{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Placeholders {
        Placeholders::from([("out", "/tmp/o".to_owned()), ("round", "2".to_owned())])
    }

    #[test]
    fn placeholders_expand_and_unknown_ones_are_errors() {
        assert_eq!(
            expand("s", "{out}/round-{round}", &values()).unwrap(),
            "/tmp/o/round-2"
        );
        assert_eq!(expand("s", "no braces", &values()).unwrap(), "no braces");
        assert!(matches!(
            expand("s", "{ouut}/x", &values()),
            Err(CommandError::Placeholder { name, .. }) if name == "ouut"
        ));
    }
}
