//! A recording fake of [`MountEffects`] for the daemon's unit tests.
//!
//! It touches nothing: it records `mount` and `unmount` calls and keeps the set of mounted
//! targets, so that a second mount is the same no-op, unmount is idempotent and `is_mounted`
//! agrees with both, as with [`LinuxMounts`](super::LinuxMounts). `usage` returns a fixed answer.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::{Mount, MountEffects, Usage, normalize};
use crate::EffectError;

/// One mutating call made on the fake, with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountCall {
    Mount(Mount),
    Unmount { target: PathBuf, remove_dir: bool },
    RemoveTarget(PathBuf),
}

/// Records calls and models the mounted targets. See the module docs.
#[derive(Debug)]
pub struct RecordingMounts {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    calls: Vec<MountCall>,
    mounted: BTreeSet<PathBuf>,
    usage: Option<Usage>,
    fail_next_mount: Option<String>,
}

impl Default for RecordingMounts {
    fn default() -> Self {
        Self::with_usage(Usage::default())
    }
}

impl RecordingMounts {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fake whose `usage` answers `usage` for every path.
    pub fn with_usage(usage: Usage) -> Self {
        RecordingMounts {
            state: Mutex::new(State {
                calls: Vec::new(),
                mounted: BTreeSet::new(),
                usage: Some(usage),
                fail_next_mount: None,
            }),
        }
    }

    /// What `usage` answers from now on; `None` makes it [`EffectError::NotFound`].
    pub fn set_usage(&self, usage: Option<Usage>) {
        self.lock().usage = usage;
    }

    /// Every `mount` and `unmount` so far, oldest first.
    pub fn calls(&self) -> Vec<MountCall> {
        self.lock().calls.clone()
    }

    /// The targets mounted now, normalised.
    pub fn mounted(&self) -> Vec<PathBuf> {
        self.lock().mounted.iter().cloned().collect()
    }

    /// Makes the next `mount` fail with [`EffectError::Io`] carrying `msg`, mounting nothing.
    pub fn fail_next_mount(&self, msg: impl Into<String>) {
        self.lock().fail_next_mount = Some(msg.into());
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the record from the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl MountEffects for RecordingMounts {
    fn mount(&self, m: &Mount) -> Result<(), EffectError> {
        let mut state = self.lock();
        state.calls.push(MountCall::Mount(m.clone()));
        if let Some(msg) = state.fail_next_mount.take() {
            return Err(EffectError::io("mount", &m.target, io::Error::other(msg)));
        }
        // Already mounted is success, as with the kernel-backed one.
        state.mounted.insert(normalize(&m.target));
        Ok(())
    }

    fn unmount(&self, target: &Path, remove_dir: bool) -> Result<(), EffectError> {
        let mut state = self.lock();
        state.calls.push(MountCall::Unmount {
            target: target.to_path_buf(),
            remove_dir,
        });
        state.mounted.remove(&normalize(target));
        Ok(())
    }

    fn remove_target(&self, target: &Path) -> Result<(), EffectError> {
        self.lock()
            .calls
            .push(MountCall::RemoveTarget(target.to_path_buf()));
        Ok(())
    }

    fn is_mounted(&self, target: &Path) -> Result<bool, EffectError> {
        Ok(self.lock().mounted.contains(&normalize(target)))
    }

    fn usage(&self, path: &Path) -> Result<Usage, EffectError> {
        self.lock()
            .usage
            .ok_or_else(|| EffectError::NotFound(path.to_path_buf()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mount::Source;

    fn tmpfs(target: &str) -> Mount {
        Mount {
            source: Source::Tmpfs(1 << 20),
            target: target.into(),
            read_only: false,
            options: vec!["nosuid".into()],
        }
    }

    #[test]
    fn records_calls_and_models_mounts() {
        let fake = RecordingMounts::new();
        let m = tmpfs("/pods/p1/vol");
        fake.mount(&m).unwrap();
        fake.mount(&m).unwrap();
        assert!(fake.is_mounted(Path::new("/pods/p1/vol/")).unwrap());
        assert_eq!(fake.mounted(), vec![PathBuf::from("/pods/p1/vol")]);
        fake.unmount(Path::new("/pods/p1/vol"), true).unwrap();
        fake.unmount(Path::new("/pods/p1/vol"), true).unwrap();
        assert!(!fake.is_mounted(Path::new("/pods/p1/vol")).unwrap());
        let unmount = MountCall::Unmount {
            target: "/pods/p1/vol".into(),
            remove_dir: true,
        };
        assert_eq!(
            fake.calls(),
            vec![
                MountCall::Mount(m.clone()),
                MountCall::Mount(m),
                unmount.clone(),
                unmount
            ]
        );
    }

    #[test]
    fn usage_is_fixed_or_missing() {
        let usage = Usage {
            total_bytes: 100,
            available_bytes: 60,
            used_bytes: 40,
            total_inodes: 10,
            free_inodes: 7,
            used_inodes: 3,
        };
        let fake = RecordingMounts::with_usage(usage);
        assert_eq!(fake.usage(Path::new("/any")).unwrap(), usage);
        fake.set_usage(None);
        assert!(matches!(
            fake.usage(Path::new("/any")),
            Err(EffectError::NotFound(p)) if p == Path::new("/any")
        ));
    }

    #[test]
    fn injected_failure_hits_only_the_next_mount() {
        let fake = RecordingMounts::new();
        fake.fail_next_mount("boom");
        let err = fake.mount(&tmpfs("/t")).unwrap_err();
        assert_eq!(err.to_string(), "mount \"/t\": boom");
        assert!(!fake.is_mounted(Path::new("/t")).unwrap());
        fake.mount(&tmpfs("/t")).unwrap();
        assert_eq!(fake.calls().len(), 2);
    }
}
