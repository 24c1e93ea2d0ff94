//! The one place where anything that can go wrong in a CSI call becomes a gRPC status.

use tonic::{Code, Status};
use wasmgate_effects::EffectError;
use wasmgate_engine::bindings::csi_types::{CsiError, ErrorCode};
use wasmgate_engine::{CallError, EngineError};

use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A required field is missing or malformed: the host checks before any plugin runs.
    #[error("{0}")]
    Invalid(String),
    /// Another call on the same volume (or name) is still running.
    #[error("an operation on {0} is already in progress")]
    Busy(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// The plugin's own answer, with the code the spec gives it.
    #[error("{}", .0.message)]
    Plugin(CsiError),
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Effect(#[from] EffectError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("host task failed: {0}")]
    Task(String),
}

impl From<CsiError> for ServiceError {
    fn from(e: CsiError) -> Self {
        ServiceError::Plugin(e)
    }
}

impl ServiceError {
    pub fn code(&self) -> Code {
        match self {
            ServiceError::Invalid(_) => Code::InvalidArgument,
            ServiceError::Busy(_) => Code::Aborted,
            ServiceError::Unimplemented(_) => Code::Unimplemented,
            ServiceError::NotFound(_) => Code::NotFound,
            ServiceError::FailedPrecondition(_) => Code::FailedPrecondition,
            ServiceError::Plugin(e) => plugin_code(e.code),
            // A plugin that ran out of time may well succeed on a retry; one that trapped or
            // blew its memory cap will not, and that is the driver's bug.
            ServiceError::Call(CallError::Timeout { .. } | CallError::Shutdown) => {
                Code::Unavailable
            }
            ServiceError::Call(_) => Code::Internal,
            ServiceError::Engine(EngineError::NotLoaded { .. }) => Code::Unavailable,
            ServiceError::Engine(_) => Code::Internal,
            ServiceError::Effect(EffectError::NotFound(_)) => Code::NotFound,
            ServiceError::Effect(_) | ServiceError::State(_) | ServiceError::Task(_) => {
                Code::Internal
            }
        }
    }
}

fn plugin_code(c: ErrorCode) -> Code {
    match c {
        ErrorCode::InvalidArgument => Code::InvalidArgument,
        ErrorCode::NotFound => Code::NotFound,
        ErrorCode::AlreadyExists => Code::AlreadyExists,
        ErrorCode::FailedPrecondition => Code::FailedPrecondition,
        ErrorCode::OutOfRange => Code::OutOfRange,
        ErrorCode::ResourceExhausted => Code::ResourceExhausted,
        ErrorCode::Aborted => Code::Aborted,
        ErrorCode::Unimplemented => Code::Unimplemented,
        ErrorCode::PermissionDenied => Code::PermissionDenied,
        ErrorCode::Unavailable => Code::Unavailable,
        ErrorCode::Internal => Code::Internal,
    }
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        let message = match &e {
            ServiceError::Effect(EffectError::Denied(why)) => {
                format!("the driver's mount plan was refused: {why}")
            }
            e => e.to_string(),
        };
        Status::new(e.code(), message)
    }
}
