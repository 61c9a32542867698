//! One error type for the whole tool, and the one place that maps errors to exit codes.
//!
//! Every failure reaches the user as one line saying what went wrong, optionally followed by a
//! `hint:` line saying what to do about it.

use std::fmt;
use std::path::Path;

/// What kind of failure this is; decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The command line or a policy/config file is wrong (exit 2).
    Usage,
    /// Input could not be read, or the lake is missing or unreadable (exit 1).
    Input,
    /// A query failed (exit 1).
    Query,
    /// Something else went wrong while running (exit 1).
    Runtime,
}

/// A failure with a message for a person and, where there is one, a hint.
#[derive(Debug)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            hint: None,
        }
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Usage, message)
    }
    pub fn input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Input, message)
    }
    pub fn query(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Query, message)
    }
    pub fn runtime(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Runtime, message)
    }
    /// An I/O failure on `path`, saying what was being done.
    pub fn io(doing: &str, path: &Path, e: std::io::Error) -> Self {
        Self::runtime(format!("{doing} {}: {e}", path.display()))
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The process exit code for this error: 2 for usage errors, 1 otherwise.
    /// (`judge` reserves 1 for "abort" and maps every error to 2 itself.)
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            ErrorKind::Usage => 2,
            ErrorKind::Input | ErrorKind::Query | ErrorKind::Runtime => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        // DataFusion's messages are precise; strip its wrapping so the user sees the cause.
        Error::query(e.strip_backtrace().to_string())
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Error::runtime(e.to_string())
    }
}

impl From<parquet::errors::ParquetError> for Error {
    fn from(e: parquet::errors::ParquetError) -> Self {
        Error::runtime(format!("parquet: {e}"))
    }
}
