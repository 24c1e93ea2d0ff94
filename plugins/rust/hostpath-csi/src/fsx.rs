//! The data directory: one directory per volume and per snapshot, under the granted root.
//!
//! Everything here is idempotent, so a retried call after a crash part-way finishes the job.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::error::internal;
use crate::wasmgate::plugin::csi_types::CsiError;

fn fail(op: &str, path: &Path, e: std::io::Error) -> CsiError {
    internal(format!("{op} {}: {e}", path.display()))
}

pub fn is_dir(path: &Path) -> bool {
    fs::metadata(path).map(|m| m.is_dir()).unwrap_or(false)
}

pub fn ensure_dir(path: &Path) -> Result<(), CsiError> {
    fs::create_dir_all(path).map_err(|e| fail("create directory", path, e))
}

/// Removes `path` and everything below it; a missing path is fine.
pub fn remove_tree(path: &Path) -> Result<(), CsiError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(fail("remove", path, e)),
    }
}

/// What [`copy_tree`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    /// Symlinks, sockets, FIFOs and devices: a sandboxed guest cannot recreate them faithfully.
    pub skipped: u64,
}

/// Makes `to` a fresh copy of the tree at `from`: whatever `to` held before (a half-done copy
/// from an interrupted call) is removed first.
pub fn replace_with_copy(from: &Path, to: &Path) -> Result<Copied, CsiError> {
    if !is_dir(from) {
        return Err(internal(format!(
            "copy source {} is missing or not a directory",
            from.display()
        )));
    }
    remove_tree(to)?;
    ensure_dir(to)?;
    copy_tree(from, to)
}

/// Copies the contents of directory `from` into the existing directory `to`: directories and
/// regular files, recursively. Walks with an explicit stack, so a deep tree cannot overflow ours.
pub fn copy_tree(from: &Path, to: &Path) -> Result<Copied, CsiError> {
    let mut done = Copied::default();
    let mut stack: Vec<(PathBuf, PathBuf)> = vec![(from.to_path_buf(), to.to_path_buf())];
    while let Some((src, dst)) = stack.pop() {
        let entries = fs::read_dir(&src).map_err(|e| fail("read directory", &src, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| fail("read directory", &src, e))?;
            let kind = entry
                .file_type()
                .map_err(|e| fail("stat", &entry.path(), e))?;
            let target = dst.join(entry.file_name());
            if kind.is_dir() {
                match fs::create_dir(&target) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(fail("create directory", &target, e)),
                }
                done.dirs += 1;
                stack.push((entry.path(), target));
            } else if kind.is_file() {
                let n = fs::copy(entry.path(), &target).map_err(|e| {
                    internal(format!(
                        "copy {} to {}: {e}",
                        entry.path().display(),
                        target.display()
                    ))
                })?;
                done.files += 1;
                done.bytes += n;
            } else {
                done.skipped += 1;
            }
        }
    }
    Ok(done)
}

#[cfg(test)]
pub mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// A directory under the system temp dir, removed on drop.
    pub struct TempDir(pub PathBuf);

    impl TempDir {
        pub fn new() -> Self {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let path = std::env::temp_dir().join(format!(
                "hostpath-csi-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn copies_nested_trees_and_replaces_stale_content() {
        let t = TempDir::new();
        let src = t.0.join("src");
        fs::create_dir_all(src.join("a/b")).unwrap();
        fs::write(src.join("top.txt"), b"top").unwrap();
        fs::write(src.join("a/b/deep.txt"), b"deep!").unwrap();
        fs::create_dir_all(src.join("empty")).unwrap();
        let dst = t.0.join("dst");
        fs::create_dir_all(&dst).unwrap();
        fs::write(dst.join("stale.txt"), b"old").unwrap();

        let done = replace_with_copy(&src, &dst).unwrap();
        assert_eq!(done.files, 2);
        assert_eq!(done.dirs, 3);
        assert_eq!(done.bytes, 8);
        assert_eq!(fs::read(dst.join("a/b/deep.txt")).unwrap(), b"deep!");
        assert!(dst.join("empty").is_dir());
        assert!(!dst.join("stale.txt").exists());
        // Idempotent.
        assert_eq!(replace_with_copy(&src, &dst).unwrap(), done);
    }

    #[cfg(unix)]
    #[test]
    fn skips_symlinks() {
        let t = TempDir::new();
        let src = t.0.join("src");
        fs::create_dir_all(&src).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();
        let dst = t.0.join("dst");
        let done = replace_with_copy(&src, &dst).unwrap();
        assert_eq!(done.skipped, 1);
        assert!(fs::symlink_metadata(dst.join("link")).is_err());
    }

    #[test]
    fn missing_source_is_an_error_and_remove_is_idempotent() {
        let t = TempDir::new();
        let e = replace_with_copy(&t.0.join("nope"), &t.0.join("dst")).unwrap_err();
        assert!(e.message.contains("nope"), "{}", e.message);
        remove_tree(&t.0.join("nope")).unwrap();
        assert!(!is_dir(&t.0.join("nope")));
    }
}
