//! What the command-line tests share: the repository, and `tsst` as a user runs it.
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `tsst` run in `dir`, without services (an embedded run), whatever the environment
/// names.
pub fn tsst(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tsst"));
    c.current_dir(dir)
        .env_remove("TSST_AMQP_URL")
        .env_remove("TSST_REDIS_URL");
    c
}
