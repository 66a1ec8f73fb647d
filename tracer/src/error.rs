//! Errors that end mmtrace, each with its exit code.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not root, or a capability missing.
    #[error("{0}")]
    Privileges(String),
    /// Bad input: a pid that does not exist, an unwritable output, a
    /// command that cannot be executed.
    #[error("{0}")]
    Usage(String),
    /// The kernel lacks something mmtrace needs.
    #[error("{0}")]
    Kernel(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// mmtrace's exit status when an output could not be written whole (a full
/// disk, an I/O error): sysexits' EX_IOERR.
pub const EXIT_OUTPUT_INCOMPLETE: i32 = 74;

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Privileges(_) | Error::Usage(_) => 2,
            Error::Kernel(_) | Error::Other(_) => 1,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
