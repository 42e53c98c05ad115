//! The test bed's one error type: each variant says which step failed and on what.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{what} failed:\n{output}")]
    Command { what: String, output: String },
    #[error("missing tools: {}; run: e2e/stack install", .0.join(" "))]
    MissingTools(Vec<String>),
    #[error("stack is not up ({}): {why}; run: e2e/stack up", dir.display())]
    NotUp { dir: PathBuf, why: String },
    #[error("{}: {why}", path.display())]
    Corrupt { path: PathBuf, why: String },
    #[error("{component} failed: {why}\nlast lines of {}:\n{log_tail}", log.display())]
    Unhealthy {
        component: &'static str,
        why: String,
        log: PathBuf,
        log_tail: String,
    },
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
