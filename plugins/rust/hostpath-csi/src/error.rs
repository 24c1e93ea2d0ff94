//! `csi-error` constructors, one per gRPC code the plugin returns.
//!
//! Messages are lower-case, name the object they are about, and never end in a full stop.

use crate::wasmgate::plugin::csi_types::{CsiError, ErrorCode};

pub fn err(code: ErrorCode, message: impl Into<String>) -> CsiError {
    CsiError {
        code,
        message: message.into(),
    }
}

pub fn invalid(message: impl Into<String>) -> CsiError {
    err(ErrorCode::InvalidArgument, message)
}

pub fn not_found(message: impl Into<String>) -> CsiError {
    err(ErrorCode::NotFound, message)
}

pub fn already_exists(message: impl Into<String>) -> CsiError {
    err(ErrorCode::AlreadyExists, message)
}

pub fn precondition(message: impl Into<String>) -> CsiError {
    err(ErrorCode::FailedPrecondition, message)
}

pub fn out_of_range(message: impl Into<String>) -> CsiError {
    err(ErrorCode::OutOfRange, message)
}

pub fn exhausted(message: impl Into<String>) -> CsiError {
    err(ErrorCode::ResourceExhausted, message)
}

pub fn aborted(message: impl Into<String>) -> CsiError {
    err(ErrorCode::Aborted, message)
}

pub fn unimplemented(message: impl Into<String>) -> CsiError {
    err(ErrorCode::Unimplemented, message)
}

pub fn unavailable(message: impl Into<String>) -> CsiError {
    err(ErrorCode::Unavailable, message)
}

pub fn internal(message: impl Into<String>) -> CsiError {
    err(ErrorCode::Internal, message)
}

/// Rejects an empty identifier or path argument.
pub fn require(value: &str, what: &str) -> Result<(), CsiError> {
    if value.is_empty() {
        Err(invalid(format!("{what} is required")))
    } else {
        Ok(())
    }
}
