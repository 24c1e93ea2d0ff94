//! The one place where anything that can go wrong in a CNI call becomes a CNI error code.

use wasmgate_cni::error::{CniError, code};
use wasmgate_effects::EffectError;
use wasmgate_engine::{CallError, EngineError};

use crate::state::StateError;

/// Host-defined codes (the spec leaves 100+ to plugins; the example plugin uses 102 and 110).
pub const PLAN_DENIED: u32 = 103;
pub const EFFECT_FAILED: u32 = 104;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Cni(#[from] CniError),
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Effect(#[from] EffectError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("unknown plugin {0}")]
    UnknownPlugin(String),
}

impl From<ServiceError> for CniError {
    fn from(e: ServiceError) -> Self {
        let msg = e.to_string();
        match e {
            ServiceError::Cni(c) => c,
            ServiceError::Call(CallError::Timeout { .. }) => CniError::new(
                code::TRY_AGAIN,
                msg,
                "the plugin ran past its deadline; retry",
            ),
            ServiceError::Call(CallError::Shutdown) => CniError::new(code::TRY_AGAIN, msg, ""),
            ServiceError::Call(CallError::Trap { detail, .. }) => {
                CniError::new(code::PLUGIN_TRAP, msg, detail)
            }
            ServiceError::Call(CallError::OutOfMemory { .. })
            | ServiceError::Call(CallError::Instantiate { .. }) => {
                CniError::new(code::PLUGIN_TRAP, msg, "")
            }
            ServiceError::UnknownPlugin(_)
            | ServiceError::Engine(EngineError::UnknownPlugin(_)) => CniError::new(
                code::INVALID_CONFIG,
                msg,
                "name a plugin declared in the daemon config",
            ),
            ServiceError::Engine(_) => CniError::new(code::NOT_AVAILABLE, msg, ""),
            ServiceError::Effect(EffectError::Denied(_)) => CniError::new(PLAN_DENIED, msg, ""),
            ServiceError::Effect(
                EffectError::HostInterfaceExists(_) | EffectError::ContainerInterfaceExists(_),
            ) => CniError::new(code::ALREADY_EXISTS, msg, ""),
            ServiceError::Effect(EffectError::NotPodNetns { .. }) => CniError::new(
                code::INVALID_ENV,
                msg,
                "CNI_NETNS must name the pod's own network namespace by absolute path",
            ),
            ServiceError::Effect(EffectError::Netns { .. }) => CniError::new(
                code::INVALID_ENV,
                msg,
                "CNI_NETNS must name an existing network namespace",
            ),
            ServiceError::Effect(_) => CniError::new(EFFECT_FAILED, msg, ""),
            ServiceError::State(_) => CniError::new(code::IO, msg, ""),
        }
    }
}
