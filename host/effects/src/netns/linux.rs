//! [`LinuxNetns`]: the real [`NetnsEffects`], with unshare(2), a bind mount and umount2(2), as
//! containerd's `pkg/netns` does.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::thread;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::statfs::{NSFS_MAGIC, statfs};

use super::NetnsEffects;
use crate::EffectError;

/// The calling thread's own namespace file; `/proc/self` would be the main thread's.
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// The kernel-backed [`NetnsEffects`]. Stateless.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxNetns;

impl LinuxNetns {
    pub fn new() -> Self {
        LinuxNetns
    }
}

impl NetnsEffects for LinuxNetns {
    fn create(&self, path: &Path) -> Result<(), EffectError> {
        if let Some(dir) = path.parent() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| EffectError::io("create netns dir", dir, e))?;
        }
        // The mount point; create_new, so that an existing namespace is never mounted over.
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(path)
            .map_err(|e| EffectError::io("create netns file", path, e))?;
        // unshare(CLONE_NEWNET) moves only the calling thread, so it happens on a thread of its
        // own that ends with the call: no pooled thread ever leaves the daemon's namespace.
        let pinned = thread::scope(|s| {
            thread::Builder::new()
                .name("wasmgate-netns-new".into())
                .spawn_scoped(s, || pin_new(path))
                .map_err(|e| EffectError::io("start a thread to create netns", path, e))?
                .join()
                .unwrap_or_else(|_| {
                    Err(EffectError::io(
                        "create netns",
                        path,
                        io::Error::other("the thread creating it panicked"),
                    ))
                })
        });
        if pinned.is_err() {
            let _ = umount2(path, MntFlags::MNT_DETACH);
            let _ = fs::remove_file(path);
        }
        pinned
    }

    fn remove(&self, path: &Path) -> Result<(), EffectError> {
        match umount2(path, MntFlags::MNT_DETACH) {
            // EINVAL: not a mount point, so nothing pins it any more.
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(EffectError::io("unmount netns", path, e)),
        }
        match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(EffectError::io("remove netns file", path, e)),
        }
    }

    fn is_pinned(&self, path: &Path) -> bool {
        statfs(path).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
    }
}

/// On a thread of its own: a new network namespace, pinned at `path`, its `lo` up.
fn pin_new(path: &Path) -> Result<(), EffectError> {
    unshare(CloneFlags::CLONE_NEWNET).map_err(|e| EffectError::io("unshare netns for", path, e))?;
    mount(
        Some(THREAD_NETNS),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| EffectError::io("pin netns at", path, e))?;
    crate::netlink::loopback_up(&path.to_string_lossy())
}
