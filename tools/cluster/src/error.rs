use std::path::PathBuf;

/// What went wrong, with what was being done. Never carries a token or a key: commands are
/// described by name, and logs are pointed at by path (with their last lines for a failed start).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{command} failed: {detail}")]
    Command { command: String, detail: String },
    #[error("{component} did not become ready: {detail}")]
    NotReady { component: String, detail: String },
    #[error("{0}")]
    Missing(String),
    #[error("bad setting {name}={value:?}: {reason}")]
    Setting {
        name: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("{0}")]
    Left(String),
    #[error("the cluster in {0} is not up")]
    NotUp(PathBuf),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { what, path, source }
    }
}
