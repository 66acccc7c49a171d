//! Why a config is refused: the file, the line and column, the document's kind
//! and name and the field path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {what}: {message}")]
    Syntax {
        path: String,
        line: usize,
        column: usize,
        what: String,
        message: String,
    },
    #[error("{path}: document at line {line}: {source}")]
    UnknownKind {
        path: String,
        line: usize,
        source: crate::model::UnknownKind,
    },
    #[error("{path}: document at line {line}: missing `kind`")]
    MissingKind { path: String, line: usize },
    #[error("{path}: {kind} {name:?}: {message}")]
    Invalid {
        path: String,
        kind: &'static str,
        name: String,
        message: String,
    },
}

impl Error {
    /// A compile error of the objects read from `path`.
    pub fn invalid(path: &str, e: crate::state::CompileError) -> Error {
        Error::Invalid {
            path: path.to_owned(),
            kind: e.kind,
            name: e.name,
            message: e.message,
        }
    }
}
