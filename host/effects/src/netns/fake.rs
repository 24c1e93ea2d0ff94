//! A recording fake of [`NetnsEffects`] for the daemon's unit tests.
//!
//! It touches nothing: it records `create` and `remove` calls and keeps the set of pinned paths,
//! so that creating an existing path fails, removing is idempotent and `is_pinned` agrees with
//! both, as with [`LinuxNetns`](super::LinuxNetns).

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::NetnsEffects;
use crate::EffectError;

/// One call made on the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetnsCall {
    Create(PathBuf),
    Remove(PathBuf),
}

/// Records calls and models the pinned paths. See the module docs.
#[derive(Debug, Default)]
pub struct RecordingNetns {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<NetnsCall>,
    pinned: BTreeSet<PathBuf>,
    fail_next_create: Option<String>,
}

impl RecordingNetns {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<NetnsCall> {
        self.lock().calls.clone()
    }

    /// The paths pinned now.
    pub fn pinned(&self) -> Vec<PathBuf> {
        self.lock().pinned.iter().cloned().collect()
    }

    /// Makes the next `create` fail with [`EffectError::Io`] carrying `msg`, pinning nothing.
    pub fn fail_next_create(&self, msg: impl Into<String>) {
        self.lock().fail_next_create = Some(msg.into());
    }

    /// Drops `path` as if someone had run `ip netns del` on it behind the daemon's back.
    pub fn vanish(&self, path: &Path) {
        self.lock().pinned.remove(path);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the record from the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl NetnsEffects for RecordingNetns {
    fn create(&self, path: &Path) -> Result<(), EffectError> {
        let mut st = self.lock();
        st.calls.push(NetnsCall::Create(path.to_path_buf()));
        if let Some(msg) = st.fail_next_create.take() {
            return Err(EffectError::io("create netns", path, io::Error::other(msg)));
        }
        if !st.pinned.insert(path.to_path_buf()) {
            return Err(EffectError::io(
                "create netns file",
                path,
                io::Error::from(io::ErrorKind::AlreadyExists),
            ));
        }
        Ok(())
    }

    fn remove(&self, path: &Path) -> Result<(), EffectError> {
        let mut st = self.lock();
        st.calls.push(NetnsCall::Remove(path.to_path_buf()));
        st.pinned.remove(path);
        Ok(())
    }

    fn is_pinned(&self, path: &Path) -> bool {
        self.lock().pinned.contains(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_pinning_as_the_kernel_does() {
        let fake = RecordingNetns::new();
        let p = Path::new("/run/netns/a");
        fake.create(p).unwrap();
        assert!(fake.is_pinned(p));
        let err = fake.create(p).unwrap_err().to_string();
        assert!(err.contains("/run/netns/a"), "{err}");
        fake.remove(p).unwrap();
        fake.remove(p).unwrap();
        assert!(!fake.is_pinned(p));
        fake.fail_next_create("no space");
        assert!(fake.create(p).is_err());
        assert!(fake.pinned().is_empty());
        assert_eq!(fake.calls().len(), 5);
    }
}
