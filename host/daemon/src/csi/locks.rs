//! At most one call per volume (or per name, for creates) at a time. A second one is told
//! ABORTED at once, as the spec asks, rather than queued behind the first: the CO retries with
//! backoff, and a queue would let a stuck call pile up work behind it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use super::error::ServiceError;

#[derive(Default, Clone)]
pub struct Locks {
    held: Arc<Mutex<BTreeSet<String>>>,
}

/// Released on drop, so a call that fails or is cancelled never leaves its volume locked.
pub struct Guard {
    held: Arc<Mutex<BTreeSet<String>>>,
    keys: Vec<String>,
}

impl Locks {
    /// Takes every key or none.
    pub fn acquire(&self, keys: &[String]) -> Result<Guard, ServiceError> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(busy) = keys.iter().find(|k| held.contains(*k)) {
            return Err(ServiceError::Busy(busy.clone()));
        }
        held.extend(keys.iter().cloned());
        Ok(Guard {
            held: self.held.clone(),
            keys: keys.to_vec(),
        })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        for k in &self.keys {
            held.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_key_is_busy_until_released() {
        let locks = Locks::default();
        let a = locks.acquire(&["volume v1".into()]).unwrap();
        let err = locks
            .acquire(&["volume v2".into(), "volume v1".into()])
            .err()
            .unwrap();
        assert_eq!(err.code(), tonic::Code::Aborted);
        assert!(err.to_string().contains("volume v1"), "{err}");
        // All or nothing: v2 was not taken by the failed attempt.
        let b = locks.acquire(&["volume v2".into()]).unwrap();
        drop(a);
        let _a = locks.acquire(&["volume v1".into()]).unwrap();
        drop(b);
    }
}
