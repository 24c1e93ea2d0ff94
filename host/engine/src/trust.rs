//! Whether a directory may hold what root will later trust: the compiled-code cache, whose
//! `*.cwasm` files are mapped as native code. Anyone who can write such a file, or swap the
//! directory or one of its parents, runs code as the daemon.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::EngineError;

/// Creates `dir` (mode 0700) if it is missing, then checks it and every parent, both as
/// written and with symlinks resolved: each must be owned by the daemon's user (root), and
/// none writable by group or others. A parent with the sticky bit (`/tmp`) may be
/// world-writable, since nobody else can rename or remove what the daemon owns inside it; the
/// directory itself may not.
pub fn check_private_dir(dir: &Path) -> Result<(), EngineError> {
    let refuse = |why: String| EngineError::UntrustedDir {
        path: dir.to_path_buf(),
        why,
    };
    if !dir.is_absolute() {
        return Err(refuse("it is not an absolute path".into()));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| refuse(format!("cannot create it: {e}")))?;
    let real = dir
        .canonicalize()
        .map_err(|e| refuse(format!("cannot resolve it: {e}")))?;
    // Safety: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    for path in [dir.to_path_buf(), real] {
        for (i, p) in path.ancestors().enumerate() {
            check_one(p, i == 0, uid).map_err(&refuse)?;
        }
    }
    Ok(())
}

fn check_one(p: &Path, is_dir_itself: bool, uid: u32) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
    if meta.uid() != uid {
        return Err(format!(
            "{} is owned by uid {}, not by the daemon's uid {uid}",
            p.display(),
            meta.uid()
        ));
    }
    // A symlink's own mode means nothing; its owner (checked above) is who can repoint it.
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode();
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && (is_dir_itself || !sticky) {
        return Err(format!(
            "{} is writable by group or others (mode {:o})",
            p.display(),
            mode & 0o7777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("wg-trust-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::DirBuilder::new().mode(0o755).create(&d).unwrap();
        d
    }

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn refusal(dir: &Path) -> String {
        check_private_dir(dir).unwrap_err().to_string()
    }

    #[test]
    fn a_private_dir_passes_and_is_created_0700() {
        let d = scratch("ok");
        let cache = d.join("a/cache");
        check_private_dir(&cache).unwrap();
        let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_dir_others_can_write_is_refused() {
        let d = scratch("open");
        let cache = d.join("cache");
        std::fs::create_dir(&cache).unwrap();
        chmod(&cache, 0o777);
        assert!(refusal(&cache).contains("writable by group or others (mode 777)"));
        // Sticky does not help the directory itself: others could still plant files in it.
        chmod(&cache, 0o1777);
        assert!(refusal(&cache).contains("writable by group or others"));
        // A group-writable parent could swap the directory.
        chmod(&cache, 0o700);
        chmod(&d, 0o775);
        assert!(refusal(&cache).contains(&format!("{} is writable", d.display())));
        // A sticky world-writable parent, like /tmp, cannot.
        chmod(&d, 0o1777);
        check_private_dir(&cache).unwrap();
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_dir_or_parent_owned_by_another_user_is_refused() {
        let d = scratch("owner");
        let cache = d.join("cache");
        std::fs::create_dir(&cache).unwrap();
        std::os::unix::fs::chown(&cache, Some(1000), None).unwrap();
        assert!(refusal(&cache).contains("is owned by uid 1000"));
        std::os::unix::fs::chown(&cache, Some(0), None).unwrap();
        std::os::unix::fs::chown(&d, Some(1000), None).unwrap();
        assert!(refusal(&cache).contains("is owned by uid 1000"));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_symlink_another_user_could_repoint_is_refused() {
        let d = scratch("link");
        let real = d.join("real");
        std::fs::create_dir(&real).unwrap();
        chmod(&real, 0o700);
        let link = d.join("cache");
        symlink(&real, &link).unwrap();
        check_private_dir(&link).unwrap();
        std::os::unix::fs::lchown(&link, Some(1000), None).unwrap();
        assert!(refusal(&link).contains("is owned by uid 1000"));
        std::fs::remove_dir_all(d).unwrap();
    }
}
