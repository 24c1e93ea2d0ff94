//! Integration tests of [`LinuxMounts`] against the real kernel.
//!
//! Needs root (CAP_SYS_ADMIN). Nothing can leak onto the machine: each test body runs on a thread
//! of its own that has unshared its mount namespace and made every mount in it private, so no
//! mount propagates out and all of them go away with the thread, even if the test panics. On top
//! of that, every path a test touches is under a scratch directory unique to the test, and the
//! scratch guard detaches whatever is still mounted under it before deleting it.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::thread;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::statvfs::{FsFlags, statvfs};
use wasmgate_effects::{
    EffectError, LinuxMounts, Mount, MountContext, MountEffects, MountRequest, RequestSource,
    Source, validate_mounts,
};

/// Runs `f` on a new thread in a private copy of the mount namespace.
fn isolated(f: impl FnOnce() + Send) {
    thread::scope(|s| {
        s.spawn(|| {
            unshare(CloneFlags::CLONE_NEWNS).expect("unshare the mount namespace");
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .expect("make every mount private");
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A directory of the test's own, with a `src` directory holding a file. On drop it detaches
/// every mount under it, deepest first, and deletes it only when none is left.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("wgfx-mounts-{}-{tag}", std::process::id()));
        // A leftover from a crashed run with the same pid. Its mounts, if any, were in a private
        // namespace that died with it.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("src")).unwrap();
        fs::write(dir.join("src/keep"), b"data").unwrap();
        // Canonical, so that paths compare with what the kernel reports.
        Scratch {
            dir: fs::canonicalize(&dir).unwrap(),
        }
    }

    fn src(&self) -> PathBuf {
        self.dir.join("src")
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    fn bind(&self, target: &str, read_only: bool) -> Mount {
        Mount {
            source: Source::Bind(self.src()),
            target: self.path(target),
            read_only,
            options: vec![],
        }
    }

    fn mounts_under(&self) -> Vec<PathBuf> {
        mount_points()
            .into_iter()
            .filter(|p| p.starts_with(&self.dir))
            .collect()
    }

    fn cleanup(&self) {
        for _ in 0..32 {
            let mut under = self.mounts_under();
            if under.is_empty() {
                break;
            }
            under.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
            for p in under {
                let _ = umount2(&p, MntFlags::MNT_DETACH);
            }
        }
        if self.mounts_under().is_empty() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// The mount points of this thread's namespace, escapes decoded, in mountinfo order.
fn mount_points() -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| {
            PathBuf::from(
                p.replace("\\040", " ")
                    .replace("\\011", "\t")
                    .replace("\\012", "\n")
                    .replace("\\134", "\\"),
            )
        })
        .collect()
}

fn times_mounted(p: &Path) -> usize {
    mount_points().iter().filter(|m| *m == p).count()
}

#[test]
fn bind_mount_writes_reach_the_source() {
    isolated(|| {
        let s = Scratch::new("bind");
        let m = s.bind("pods/p1/mount", false);
        LinuxMounts.mount(&m).unwrap();
        assert_eq!(times_mounted(&m.target), 1);
        assert_eq!(fs::read(m.target.join("keep")).unwrap(), b"data");
        fs::write(m.target.join("new"), b"through the bind").unwrap();
        assert_eq!(fs::read(s.src().join("new")).unwrap(), b"through the bind");
        // Created with the mode asked for; the mount hides it, so look after unmounting.
        LinuxMounts.unmount(&m.target, false).unwrap();
        let mode = fs::metadata(&m.target).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o750
        );
    });
}

#[test]
fn read_only_bind_refuses_writes() {
    isolated(|| {
        let s = Scratch::new("ro");
        let m = s.bind("ro", true);
        LinuxMounts.mount(&m).unwrap();
        let err = fs::write(m.target.join("new"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(Errno::EROFS as i32), "{err}");
        assert_eq!(fs::read(m.target.join("keep")).unwrap(), b"data");
        // Only the bind is read-only, not its source.
        fs::write(s.src().join("still-writable"), b"x").unwrap();
    });
}

#[test]
fn options_become_mount_flags() {
    isolated(|| {
        let s = Scratch::new("flags");
        let mut m = s.bind("flags", false);
        m.options = vec!["nosuid".into(), "nodev".into(), "noexec".into()];
        LinuxMounts.mount(&m).unwrap();
        let flags = statvfs(&m.target).unwrap().flags();
        for f in [FsFlags::ST_NOSUID, FsFlags::ST_NODEV, FsFlags::ST_NOEXEC] {
            assert!(flags.contains(f), "{f:?} missing from {flags:?}");
        }
        assert!(!flags.contains(FsFlags::ST_RDONLY));

        // A bind of a nosuid mount stays nosuid when a remount changes its other flags.
        let again = Mount {
            source: Source::Bind(m.target.clone()),
            target: s.path("flags2"),
            read_only: true,
            options: vec![],
        };
        LinuxMounts.mount(&again).unwrap();
        let flags = statvfs(&again.target).unwrap().flags();
        let kept = FsFlags::ST_RDONLY | FsFlags::ST_NOSUID | FsFlags::ST_NODEV | FsFlags::ST_NOEXEC;
        assert!(flags.contains(kept), "{flags:?}");
    });
}

#[test]
fn mount_twice_is_idempotent() {
    isolated(|| {
        let s = Scratch::new("twice");
        let m = s.bind("twice", false);
        LinuxMounts.mount(&m).unwrap();
        LinuxMounts.mount(&m).unwrap();
        assert_eq!(times_mounted(&m.target), 1);
    });
}

#[test]
fn is_mounted_follows_mountinfo() {
    isolated(|| {
        let s = Scratch::new("is-mounted");
        let target = s.path("target");
        assert!(!LinuxMounts.is_mounted(&target).unwrap());
        fs::create_dir(&target).unwrap();
        assert!(!LinuxMounts.is_mounted(&target).unwrap());
        // A bind within one filesystem has the parent's st_dev; mountinfo still sees it.
        LinuxMounts.mount(&s.bind("target", false)).unwrap();
        assert!(LinuxMounts.is_mounted(&target).unwrap());
        assert!(LinuxMounts.is_mounted(&s.path("./target/")).unwrap());
        assert!(!LinuxMounts.is_mounted(&s.src()).unwrap());
        assert!(!LinuxMounts.is_mounted(&s.path("missing/deeper")).unwrap());

        // Through a symlinked parent, and with a space that mountinfo escapes.
        symlink(&s.dir, s.path("alias")).unwrap();
        assert!(LinuxMounts.is_mounted(&s.path("alias/target")).unwrap());
        let spaced = s.bind("with space", false);
        LinuxMounts.mount(&spaced).unwrap();
        assert!(LinuxMounts.is_mounted(&spaced.target).unwrap());

        LinuxMounts.unmount(&target, false).unwrap();
        assert!(!LinuxMounts.is_mounted(&target).unwrap());
    });
}

#[test]
fn unmount_removes_the_dir_and_keeps_the_data() {
    isolated(|| {
        let s = Scratch::new("unmount");
        let m = s.bind("pods/p1/mount", false);
        LinuxMounts.mount(&m).unwrap();
        fs::write(m.target.join("written"), b"w").unwrap();
        LinuxMounts.unmount(&m.target, true).unwrap();
        assert!(!m.target.exists());
        // Only the target goes; parents it created on mount stay for kubelet to manage.
        assert!(s.path("pods/p1").is_dir());
        assert_eq!(fs::read(s.src().join("keep")).unwrap(), b"data");
        assert_eq!(fs::read(s.src().join("written")).unwrap(), b"w");
    });
}

#[test]
fn unmount_twice_is_ok() {
    isolated(|| {
        let s = Scratch::new("unmount-twice");
        let m = s.bind("t", false);
        LinuxMounts.mount(&m).unwrap();
        LinuxMounts.unmount(&m.target, true).unwrap();
        LinuxMounts.unmount(&m.target, true).unwrap();
        // Without remove_dir as well: a plain directory is simply not a mount point.
        fs::create_dir(&m.target).unwrap();
        LinuxMounts.unmount(&m.target, false).unwrap();
        assert!(m.target.is_dir());
    });
}

#[test]
fn unmount_of_a_missing_path_is_ok() {
    isolated(|| {
        let s = Scratch::new("missing");
        LinuxMounts.unmount(&s.path("never"), true).unwrap();
        LinuxMounts
            .unmount(&s.path("no/such/parent"), false)
            .unwrap();
    });
}

#[test]
fn unmount_takes_off_stacked_mounts() {
    isolated(|| {
        let s = Scratch::new("stacked");
        let m = s.bind("t", false);
        LinuxMounts.mount(&m).unwrap();
        // Stack two more behind LinuxMounts' back, as repeated foreign mounts would.
        for _ in 0..2 {
            mount(
                Some("tmpfs"),
                &m.target,
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            )
            .unwrap();
        }
        assert_eq!(times_mounted(&m.target), 3);
        LinuxMounts.unmount(&m.target, true).unwrap();
        assert_eq!(times_mounted(&m.target), 0);
        assert!(!m.target.exists());
    });
}

#[test]
fn unmount_leaves_a_non_empty_dir() {
    isolated(|| {
        let s = Scratch::new("non-empty");
        let target = s.path("t");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("user-data"), b"mine").unwrap();
        let m = s.bind("t", false);
        LinuxMounts.mount(&m).unwrap();
        let err = LinuxMounts.unmount(&target, true).unwrap_err();
        assert!(
            matches!(&err, EffectError::TargetNotEmpty(p) if *p == target),
            "{err}"
        );
        assert!(err.to_string().contains("not empty"), "{err}");
        assert!(!LinuxMounts.is_mounted(&target).unwrap());
        assert_eq!(fs::read(target.join("user-data")).unwrap(), b"mine");
    });
}

#[test]
fn unmount_after_a_lazy_detach() {
    isolated(|| {
        let s = Scratch::new("detached");
        let m = s.bind("t", false);
        LinuxMounts.mount(&m).unwrap();
        umount2(&m.target, MntFlags::MNT_DETACH).unwrap();
        assert!(!LinuxMounts.is_mounted(&m.target).unwrap());
        LinuxMounts.unmount(&m.target, true).unwrap();
        assert!(!m.target.exists());
        assert_eq!(fs::read(s.src().join("keep")).unwrap(), b"data");
    });
}

#[test]
fn tmpfs_has_its_size() {
    isolated(|| {
        let s = Scratch::new("tmpfs");
        let size = 16 << 20;
        let m = Mount {
            source: Source::Tmpfs(size),
            target: s.path("tmp"),
            read_only: false,
            options: vec!["nosuid".into(), "nodev".into()],
        };
        LinuxMounts.mount(&m).unwrap();
        fs::write(m.target.join("f"), vec![7u8; 1 << 20]).unwrap();
        let usage = LinuxMounts.usage(&m.target).unwrap();
        assert_eq!(usage.total_bytes, size, "{usage:?}");
        assert!(usage.used_bytes >= 1 << 20, "{usage:?}");
        assert_eq!(usage.used_bytes + usage.available_bytes, size, "{usage:?}");
        assert!(usage.used_inodes >= 2 && usage.free_inodes > 0, "{usage:?}");
        assert_eq!(usage.used_inodes + usage.free_inodes, usage.total_inodes);
        // A fresh tmpfs, not the source's filesystem.
        assert!(!m.target.join("keep").exists());
        LinuxMounts.unmount(&m.target, true).unwrap();
        assert!(!m.target.exists());
    });
}

#[test]
fn usage_of_a_missing_path_is_not_found() {
    isolated(|| {
        let s = Scratch::new("usage");
        let missing = s.path("gone");
        assert!(matches!(
            LinuxMounts.usage(&missing),
            Err(EffectError::NotFound(p)) if p == missing
        ));
        LinuxMounts.usage(&s.src()).unwrap();
    });
}

#[test]
fn failed_mount_removes_the_dirs_it_created() {
    isolated(|| {
        let s = Scratch::new("failed");
        let m = Mount {
            source: Source::Bind(s.path("no-such-source")),
            target: s.path("a/b/c"),
            read_only: false,
            options: vec![],
        };
        let err = LinuxMounts.mount(&m).unwrap_err();
        assert!(
            matches!(
                err,
                EffectError::Io {
                    op: "open bind source",
                    ..
                }
            ),
            "{err}"
        );
        assert!(!s.path("a").exists());

        // An unknown option in a record that skipped validation is refused before anything.
        let mut bad = s.bind("x", false);
        bad.options = vec!["suid".into()];
        assert!(matches!(
            LinuxMounts.mount(&bad),
            Err(EffectError::Denied(_))
        ));
        assert!(!s.path("x").exists());
    });
}

#[test]
fn symlink_target_is_refused() {
    isolated(|| {
        let s = Scratch::new("symlink-target");
        fs::create_dir(s.path("real")).unwrap();
        symlink(s.path("real"), s.path("t")).unwrap();
        let err = LinuxMounts.mount(&s.bind("t", false)).unwrap_err();
        assert!(err.to_string().contains("the target is a symlink"), "{err}");
        assert_eq!(times_mounted(&s.path("real")), 0);
    });
}

/// The plugin owns its data directory, so it can swap a validated directory for a symlink
/// before the host mounts; the mount must notice rather than follow it out of the grant.
#[test]
fn source_swapped_after_validation_is_refused() {
    isolated(|| {
        let s = Scratch::new("swap");
        fs::create_dir_all(s.path("grant/vol")).unwrap();
        fs::create_dir(s.path("outside")).unwrap();
        let target = s.path("pods/p1/mount");
        let ctx = MountContext {
            target_path: Some(target.clone()),
            staging_path: None,
            grant_guest: "/data".into(),
            grant_host: s.path("grant"),
        };
        let plan = [MountRequest {
            source: RequestSource::Bind("/data/vol".into()),
            target: target.clone(),
            read_only: false,
            options: vec![],
        }];
        let mounts = validate_mounts(&plan, &ctx).unwrap();
        fs::remove_dir(s.path("grant/vol")).unwrap();
        symlink(s.path("outside"), s.path("grant/vol")).unwrap();
        let err = LinuxMounts.mount(&mounts[0]).unwrap_err();
        assert!(
            matches!(&err, EffectError::Denied(why) if why.contains("changed after validation")),
            "{err}"
        );
        assert!(!LinuxMounts.is_mounted(&target).unwrap());
        assert!(!target.exists());
    });
}
