//! Exit codes (sysexits-style, documented in docs/exit-codes.md) and the errors callers branch on.

use std::process::ExitCode;

use crate::amqp::BrokerError;
use crate::config::ConfigError;
use crate::store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    Success = 0,
    /// Some of what was asked failed (a worker did not start, a job failed).
    Failure = 1,
    /// Bad command line (clap's own code).
    Usage = 2,
    /// Unknown worker name or other bad argument value.
    BadArgument = 64,
    /// What was asked cannot be done with the data there is (an unknown parent, a cycle, a
    /// retry of a job that succeeded): nothing was changed.
    DataError = 65,
    /// What a command only reads is not there (no status store at the configured path).
    NoInput = 66,
    /// The broker or the status store is unreachable.
    Unavailable = 69,
    /// A bug in cm.
    Software = 70,
    /// Not done within its deadline, or the status store was busy: try again.
    TempFail = 75,
    /// Permission denied: a directory, a file, or the broker's login.
    NoPerm = 77,
    /// The configuration file is missing or invalid.
    Config = 78,
}

impl Code {
    pub fn from_raw(n: u8) -> Self {
        [
            Self::Success,
            Self::Failure,
            Self::Usage,
            Self::BadArgument,
            Self::DataError,
            Self::NoInput,
            Self::Unavailable,
            Self::Software,
            Self::TempFail,
            Self::NoPerm,
            Self::Config,
        ]
        .into_iter()
        .find(|c| *c as u8 == n)
        .unwrap_or(Self::Failure)
    }
}

impl From<Code> for ExitCode {
    fn from(c: Code) -> Self {
        ExitCode::from(c as u8)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CmError {
    #[error("{message}")]
    Permission { message: String },
    #[error("unknown worker {name:?}: this config has {known} (see `cm queue status`)")]
    UnknownWorker { name: String, known: String },
    #[error("{0}")]
    BadArgument(String),
    #[error("{0}")]
    NoInput(String),
    #[error("{message}")]
    Partial { message: String, code: Code },
    #[error("{0}")]
    Other(String),
}

/// The exit code for an error: the first cause in its chain that knows one.
pub fn code_for(err: &anyhow::Error) -> Code {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<CmError>() {
            return match e {
                CmError::Permission { .. } => Code::NoPerm,
                CmError::UnknownWorker { .. } | CmError::BadArgument(_) => Code::BadArgument,
                CmError::NoInput(_) => Code::NoInput,
                CmError::Partial { code, .. } => *code,
                CmError::Other(_) => Code::Failure,
            };
        }
        if cause.downcast_ref::<ConfigError>().is_some() {
            return Code::Config;
        }
        if let Some(e) = cause.downcast_ref::<BrokerError>() {
            return match e {
                BrokerError::AccessRefused { .. } | BrokerError::VhostRefused { .. } => {
                    Code::NoPerm
                }
                BrokerError::Tls { .. } | BrokerError::TlsSetup { .. } => Code::Config,
                _ => Code::Unavailable,
            };
        }
        if let Some(e) = cause.downcast_ref::<StoreError>() {
            return match e {
                StoreError::Unreachable { .. } => Code::Unavailable,
                StoreError::Busy { .. } | StoreError::Full { .. } => Code::TempFail,
                StoreError::Tls { .. } => Code::Config,
                StoreError::Refused(_) => Code::DataError,
                StoreError::Migration { .. }
                | StoreError::Backend { .. }
                | StoreError::WriterGone(_)
                | StoreError::BadHistory { .. } => Code::Failure,
            };
        }
        if let Some(e) = cause.downcast_ref::<std::io::Error>() {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                return Code::NoPerm;
            }
        }
    }
    Code::Failure
}
