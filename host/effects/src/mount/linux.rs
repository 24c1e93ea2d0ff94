//! [`LinuxMounts`]: the real [`MountEffects`], with mount(2), umount2(2) and statvfs(3).
//!
//! Mounts happen in the calling thread's mount namespace; in the daemon that is the host's, so
//! kubelet sees them. A bind source is opened with `O_PATH` and mounted through
//! `/proc/self/fd/N` once the opened file is confirmed to be the validated canonical path: the
//! plugin owns its data directory and could otherwise swap a component for a symlink between
//! [`validate_mounts`](super::validate_mounts) and the mount.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::statvfs::{FsFlags, statvfs};

use super::{Mount, MountEffects, Source, Usage, normalize, option_flags};
use crate::EffectError;

/// How many mounts stacked on one target `unmount` takes off before it gives up. Kubelet
/// retries can stack a few; more than this means something keeps mounting there.
const MAX_STACKED: usize = 16;

/// The calling thread's view, not the process's: `/proc/self` is the main thread's mount
/// namespace, which is the wrong one for a thread that has unshared or entered another.
const MOUNTINFO: &str = "/proc/thread-self/mountinfo";

/// The kernel-backed [`MountEffects`]. Stateless.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxMounts;

impl LinuxMounts {
    pub fn new() -> Self {
        LinuxMounts
    }
}

impl MountEffects for LinuxMounts {
    fn mount(&self, m: &Mount) -> Result<(), EffectError> {
        if self.is_mounted(&m.target)? {
            tracing::debug!(target = ?m.target, "already a mount point, not mounting again");
            return Ok(());
        }
        let flags = mount_flags(m)?;
        let created = create_dirs(&m.target)?;
        let result = match &m.source {
            Source::Bind(src) => bind(src, &m.target, flags),
            Source::Tmpfs(size) => tmpfs(*size, &m.target, flags),
        };
        if result.is_err() {
            for dir in created.iter().rev() {
                if let Err(e) = fs::remove_dir(dir) {
                    tracing::warn!(dir = ?dir, error = %e, "cannot undo a failed mount");
                }
            }
        }
        result
    }

    fn unmount(&self, target: &Path, remove_dir: bool) -> Result<(), EffectError> {
        match fs::symlink_metadata(target) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            // A dead NFS server or FUSE daemon: the mount cannot even be looked at, so it cannot
            // be unmounted cleanly either.
            Err(e) if is_stale(&e) => detach(target)?,
            Err(e) => return Err(EffectError::io("stat", target, e)),
        }
        let mut rounds = 0;
        while self.is_mounted(target)? {
            if rounds == MAX_STACKED {
                return Err(EffectError::io(
                    "unmount",
                    target,
                    io::Error::other(format!("still a mount point after {MAX_STACKED} unmounts")),
                ));
            }
            rounds += 1;
            match umount2(target, MntFlags::UMOUNT_NOFOLLOW) {
                Ok(()) => {}
                // mountinfo named it but the path does not reach it (a symlink in the way): it
                // is not a mount point as far as this path goes.
                Err(Errno::EINVAL) => break,
                Err(Errno::ENOENT) => return Ok(()),
                Err(e @ (Errno::EIO | Errno::ENOTCONN | Errno::ESTALE)) => {
                    tracing::warn!(target = ?target, error = %e, "stale mount, detaching");
                    detach(target)?;
                }
                Err(e) => return Err(EffectError::io("unmount", target, e)),
            }
        }
        if !remove_dir {
            return Ok(());
        }
        // Never recursive: anything under an unmounted target belongs to someone.
        match fs::remove_dir(target) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) => {
                Err(EffectError::TargetNotEmpty(target.to_path_buf()))
            }
            Err(e) => Err(EffectError::io("remove", target, e)),
        }
    }

    fn remove_target(&self, target: &Path) -> Result<(), EffectError> {
        match fs::remove_dir(target) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(EffectError::io("remove mount target", target, e)),
        }
    }

    fn is_mounted(&self, target: &Path) -> Result<bool, EffectError> {
        let Some(want) = mount_point_path(target)? else {
            return Ok(false);
        };
        let info =
            fs::read(MOUNTINFO).map_err(|e| EffectError::io("read", Path::new(MOUNTINFO), e))?;
        let want = want.as_os_str().as_bytes();
        Ok(mount_points(&info).any(|p| p == want))
    }

    fn usage(&self, path: &Path) -> Result<Usage, EffectError> {
        let st = statvfs(path).map_err(|e| match e {
            Errno::ENOENT => EffectError::NotFound(path.to_path_buf()),
            e => EffectError::io("statvfs", path, e),
        })?;
        let frag = wide(st.fragment_size());
        let blocks = wide(st.blocks());
        let free = wide(st.blocks_free());
        let files = wide(st.files());
        let files_free = wide(st.files_free());
        Ok(Usage {
            total_bytes: blocks.saturating_mul(frag),
            available_bytes: wide(st.blocks_available()).saturating_mul(frag),
            used_bytes: blocks.saturating_sub(free).saturating_mul(frag),
            total_inodes: files,
            free_inodes: files_free,
            used_inodes: files.saturating_sub(files_free),
        })
    }
}

/// statvfs counts are `u64` on 64-bit Linux but narrower on some 32-bit targets.
fn wide(n: impl Into<u64>) -> u64 {
    n.into()
}

/// The flags the options ask for, read-only included. Unknown options are refused here too: a
/// `Mount` may come back from the daemon's records rather than straight from validation.
fn mount_flags(m: &Mount) -> Result<MsFlags, EffectError> {
    let mut flags = MsFlags::empty();
    for o in &m.options {
        flags |= option_flags(o)
            .ok_or_else(|| EffectError::Denied(format!("mount option {o:?} is not allowed")))?;
    }
    if m.read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    Ok(flags)
}

/// Creates `target` and missing parents with mode 0750; returns what it created, outermost
/// first, so a failed mount can remove exactly that.
fn create_dirs(target: &Path) -> Result<Vec<PathBuf>, EffectError> {
    let mut missing = Vec::new();
    let mut p = Some(target);
    while let Some(dir) = p {
        match fs::symlink_metadata(dir) {
            // mount(2) would follow it and mount somewhere that `is_mounted(target)` never
            // reports, so every retry would stack another mount.
            Ok(meta) if dir == target && meta.file_type().is_symlink() => {
                return Err(EffectError::io(
                    "mount",
                    target,
                    io::Error::other("the target is a symlink"),
                ));
            }
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(dir.to_path_buf()),
            Err(e) => return Err(EffectError::io("stat", dir, e)),
        }
        p = dir.parent();
    }
    missing.reverse();
    if missing.is_empty() {
        return Ok(missing);
    }
    if let Err(e) = DirBuilder::new().recursive(true).mode(0o750).create(target) {
        for dir in missing.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
        return Err(EffectError::io("create mount target", target, e));
    }
    Ok(missing)
}

fn bind(src: &Path, target: &Path, flags: MsFlags) -> Result<(), EffectError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(src)
        .map_err(|e| EffectError::io("open bind source", src, e))?;
    let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let opened = fs::read_link(&fd_path).map_err(|e| EffectError::io("read link", &fd_path, e))?;
    if opened != src {
        return Err(EffectError::Denied(format!(
            "bind source {src:?} now resolves to {opened:?}; it changed after validation"
        )));
    }
    mount(
        Some(&fd_path),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| EffectError::io("bind mount", target, e))?;
    // A bind takes the per-mount flags of its source and ignores any given with MS_BIND; only a
    // remount of the new mount can change them. Without one, a read-only bind would be writable.
    if flags.is_empty() {
        return Ok(());
    }
    let remounted = inherited_flags(target).and_then(|inherited| {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | inherited | flags,
            None::<&str>,
        )
        .map_err(|e| EffectError::io("remount bind", target, e))
    });
    if remounted.is_err()
        && let Err(e) = umount2(target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW)
    {
        tracing::warn!(target = ?target, error = %e, "cannot undo a bind whose remount failed");
    }
    remounted
}

/// The restricting flags the fresh bind carries from its source. A bind remount replaces the
/// per-mount flags wholesale, so leaving these out would lift a `nosuid` or `ro` the source had.
/// Atime flags need no care: the kernel keeps them on a remount that names none.
fn inherited_flags(target: &Path) -> Result<MsFlags, EffectError> {
    let st = statvfs(target).map_err(|e| EffectError::io("statvfs", target, e))?;
    let have = st.flags();
    let mut flags = MsFlags::empty();
    for (st_flag, ms_flag) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if have.contains(st_flag) {
            flags |= ms_flag;
        }
    }
    Ok(flags)
}

fn tmpfs(size: u64, target: &Path, flags: MsFlags) -> Result<(), EffectError> {
    let data = (size > 0).then(|| format!("size={size}"));
    mount(Some("tmpfs"), target, Some("tmpfs"), flags, data.as_deref())
        .map_err(|e| EffectError::io("mount tmpfs", target, e))
}

fn detach(target: &Path) -> Result<(), EffectError> {
    match umount2(target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => Ok(()),
        Err(e) => Err(EffectError::io("detach", target, e)),
    }
}

fn is_stale(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::ENOTCONN | libc::ESTALE)
    )
}

/// The path mountinfo would show for a mount on `target`: its parent resolved, its last
/// component as is. The target itself is not resolved, since a stale mount cannot be and a
/// symlink at the target is not a mount point. `None` when the parent does not exist, so nothing
/// can be mounted there.
fn mount_point_path(target: &Path) -> Result<Option<PathBuf>, EffectError> {
    let target = std::path::absolute(target)
        .map(|p| normalize(&p))
        .map_err(|e| EffectError::io("resolve mount target", target, e))?;
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
        // `/`, or a path ending in `..`.
        return Ok(Some(fs::canonicalize(&target).unwrap_or(target)));
    };
    match fs::canonicalize(parent) {
        Ok(parent) => Ok(Some(parent.join(name))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        // A stale mount higher up: mountinfo shows resolved paths, and this one is the best
        // guess there is.
        Err(_) => Ok(Some(target)),
    }
}

/// The mount point field (the fifth) of each line of a mountinfo file, unescaped.
fn mount_points(info: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    info.split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(unescape)
}

/// Undoes the kernel's `\ooo` octal escapes of space, tab, newline and backslash.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && let Some(digits) = field.get(i + 1..i + 4)
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let value = digits
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_fields_are_unescaped() {
        let info = b"22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
            36 35 98:0 /mnt1 /mnt/with\\040space\\011tab\\134slash rw - ext3 /dev/root rw\n\
            37 35 98:0 / /odd\\777\\12 rw - ext3 /dev/root rw\n";
        let points: Vec<_> = mount_points(info).collect();
        assert_eq!(
            points,
            vec![
                b"/proc".to_vec(),
                b"/mnt/with space\ttab\\slash".to_vec(),
                // Not valid escapes: kept as they are.
                b"/odd\\777\\12".to_vec(),
            ]
        );
    }

    #[test]
    fn mount_point_path_resolves_the_parent_only() {
        let dir = std::env::temp_dir().join(format!("wgfx-mpp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("real")).unwrap();
        std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
        let canon = fs::canonicalize(&dir).unwrap();
        assert_eq!(
            mount_point_path(&dir.join("link/./t/")).unwrap(),
            Some(canon.join("real/t"))
        );
        // The last component stays unresolved even when it is a symlink.
        assert_eq!(
            mount_point_path(&dir.join("link")).unwrap(),
            Some(canon.join("link"))
        );
        assert_eq!(mount_point_path(&dir.join("missing/t")).unwrap(), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
