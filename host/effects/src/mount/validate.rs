//! The host's check of a storage plugin's mount plan, run before anything is mounted.
//!
//! A plugin is untrusted and its plan is data read back from a sandbox. [`validate_mounts`]
//! allows it to mount exactly one place, the path the request named, from one of three sources:
//! something inside its own data directory, the volume's staging path, or a fresh tmpfs. Bind
//! sources are resolved on the host with symlinks followed, because the plugin can plant
//! symlinks in its data directory and a lexical check alone would let one point at `/etc`.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use super::{ALLOWED_OPTIONS, Mount, MountRequest, RequestSource, Source, normalize, option_flags};
use crate::EffectError;

/// The longest plan accepted. Bounds the work a plan can ask for before any rule looks at it.
pub const MAX_MOUNTS: usize = 4;
/// The largest tmpfs a plan may ask for: 64 GiB.
pub const MAX_TMPFS_BYTES: u64 = 64 << 30;

/// What the request allows a plan to touch, and where the plugin's data directory is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountContext {
    /// NodePublishVolume's `target_path`. When set, the call is a publish.
    pub target_path: Option<PathBuf>,
    /// `staging_target_path`: the mount target of a stage (when `target_path` is `None`), or
    /// what [`RequestSource::Staged`] resolves to in a publish.
    pub staging_path: Option<PathBuf>,
    /// Where the plugin sees its data directory, e.g. `/data`. Must be absolute.
    pub grant_guest: String,
    /// The host directory behind `grant_guest`.
    pub grant_host: PathBuf,
}

/// Checks a plugin's plan against the request in `ctx` and resolves it to host mounts.
///
/// A plan that breaks a rule is [`EffectError::Denied`] naming the mount and field. A staging
/// path that does not exist (publish before stage) is [`EffectError::NotFound`], and a data
/// directory that cannot be resolved is [`EffectError::Io`]: those are the host's state, not the
/// plugin's fault. An empty plan is valid and mounts nothing.
pub fn validate_mounts(
    plan: &[MountRequest],
    ctx: &MountContext,
) -> Result<Vec<Mount>, EffectError> {
    if plan.len() > MAX_MOUNTS {
        return Err(denied(format!(
            "the plan has {} mounts, at most {MAX_MOUNTS} are allowed",
            plan.len()
        )));
    }
    let (allowed_target, what) = match (&ctx.target_path, &ctx.staging_path) {
        (Some(t), _) => (normalize(t), "target_path"),
        (None, Some(s)) => (normalize(s), "staging_target_path"),
        (None, None) if plan.is_empty() => return Ok(Vec::new()),
        (None, None) => {
            return Err(denied(
                "the request has neither a target path nor a staging path to mount on".into(),
            ));
        }
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(plan.len());
    for (i, req) in plan.iter().enumerate() {
        let target = &req.target;
        if !target.is_absolute() || has_parent_dir(target) {
            return Err(denied(format!(
                "mount {i} target {target:?} must be an absolute path without '..'"
            )));
        }
        let target = normalize(target);
        if target != allowed_target {
            return Err(denied(format!(
                "mount {i} target {:?} is not the request's {what} {allowed_target:?}",
                req.target
            )));
        }
        if !seen.insert(target.clone()) {
            return Err(denied(format!(
                "mount {i} target {:?} is mounted more than once",
                req.target
            )));
        }
        let read_only = check_options(i, req)?;
        let source = match &req.source {
            RequestSource::Bind(guest) => Source::Bind(resolve_bind(i, guest, ctx)?),
            RequestSource::Staged => Source::Bind(resolve_staged(i, ctx)?),
            RequestSource::Tmpfs(size) if *size > MAX_TMPFS_BYTES => {
                return Err(denied(format!(
                    "mount {i} tmpfs size {size} is larger than {MAX_TMPFS_BYTES} bytes"
                )));
            }
            RequestSource::Tmpfs(size) => Source::Tmpfs(*size),
        };
        out.push(Mount {
            source,
            target,
            read_only,
            options: req.options.clone(),
        });
    }
    Ok(out)
}

fn denied(msg: String) -> EffectError {
    EffectError::Denied(msg)
}

fn has_parent_dir(p: &Path) -> bool {
    p.components().any(|c| c == Component::ParentDir)
}

/// Checks the options against the allow-list and each other; returns the effective read-only.
fn check_options(i: usize, req: &MountRequest) -> Result<bool, EffectError> {
    if let Some(bad) = req.options.iter().find(|o| option_flags(o).is_none()) {
        return Err(denied(format!(
            "mount {i} option {bad:?} is not allowed (allowed: {})",
            ALLOWED_OPTIONS.join(", ")
        )));
    }
    let has = |o: &str| req.options.iter().any(|x| x == o);
    let read_only = req.read_only || has("ro");
    if read_only && has("rw") {
        return Err(denied(format!(
            "mount {i} option \"rw\" contradicts a read-only mount"
        )));
    }
    // The kernel would quietly let one of these win; a plan that says two things is a bug.
    let atime: Vec<_> = ["noatime", "relatime", "strictatime"]
        .into_iter()
        .filter(|o| has(o))
        .collect();
    if atime.len() > 1 {
        return Err(denied(format!(
            "mount {i} options {} contradict each other",
            atime.join(" and ")
        )));
    }
    Ok(read_only)
}

/// Maps a plugin path under its grant to the canonical host path, which must stay in the grant.
fn resolve_bind(i: usize, guest: &str, ctx: &MountContext) -> Result<PathBuf, EffectError> {
    let path = Path::new(guest);
    if !path.is_absolute() || has_parent_dir(path) {
        return Err(denied(format!(
            "mount {i} bind source {guest:?} must be an absolute path without '..'"
        )));
    }
    let grant_guest = Path::new(&ctx.grant_guest);
    // A relative prefix would leave an absolute remainder, and joining that onto the grant
    // would replace the grant altogether.
    let rest = match path.strip_prefix(grant_guest) {
        Ok(rest) if grant_guest.is_absolute() => rest,
        _ => {
            return Err(denied(format!(
                "mount {i} bind source {guest:?} is not under the plugin's data directory {:?}",
                ctx.grant_guest
            )));
        }
    };
    let root = fs::canonicalize(&ctx.grant_host)
        .map_err(|e| EffectError::io("resolve data directory", &ctx.grant_host, e))?;
    let host = fs::canonicalize(root.join(rest)).map_err(|e| {
        denied(format!(
            "mount {i} bind source {guest:?} cannot be resolved: {e}"
        ))
    })?;
    if !host.starts_with(&root) {
        return Err(denied(format!(
            "mount {i} bind source {guest:?} resolves to {host:?}, outside the plugin's data directory"
        )));
    }
    check_dir(i, guest, &host)?;
    Ok(host)
}

fn resolve_staged(i: usize, ctx: &MountContext) -> Result<PathBuf, EffectError> {
    let staging = match (&ctx.target_path, &ctx.staging_path) {
        (Some(_), Some(s)) => s,
        _ => {
            return Err(denied(format!(
                "mount {i} source \"staged\" needs a publish request with a staging path"
            )));
        }
    };
    let host = fs::canonicalize(staging).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => EffectError::NotFound(staging.clone()),
        _ => EffectError::io("resolve staging path", staging, e),
    })?;
    check_dir(i, "staged", &host)?;
    Ok(host)
}

/// Targets are directories, so a file source could only fail later, less clearly.
fn check_dir(i: usize, name: &str, host: &Path) -> Result<(), EffectError> {
    match fs::metadata(host) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(denied(format!(
            "mount {i} source {name:?} resolves to {host:?}, which is not a directory"
        ))),
        Err(e) => Err(EffectError::io("stat", host, e)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// A unique scratch directory, removed on drop. The grant, a staging dir and a directory
    /// outside the grant live in it.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("wgfx-validate-{}-{tag}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            for sub in ["grant/vols/v1", "staging", "outside"] {
                fs::create_dir_all(dir.join(sub)).unwrap();
            }
            Scratch(dir)
        }

        fn publish(&self) -> MountContext {
            MountContext {
                target_path: Some("/var/lib/kubelet/pods/p1/volumes/v1/mount".into()),
                staging_path: Some(self.0.join("staging")),
                grant_guest: "/data".into(),
                grant_host: self.0.join("grant"),
            }
        }

        fn stage(&self) -> MountContext {
            MountContext {
                target_path: None,
                ..self.publish()
            }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const TARGET: &str = "/var/lib/kubelet/pods/p1/volumes/v1/mount";

    fn req(source: RequestSource) -> MountRequest {
        MountRequest {
            source,
            target: TARGET.into(),
            read_only: false,
            options: vec![],
        }
    }

    fn bind(p: &str) -> MountRequest {
        req(RequestSource::Bind(p.into()))
    }

    fn denial(plan: &[MountRequest], ctx: &MountContext) -> String {
        match validate_mounts(plan, ctx) {
            Err(EffectError::Denied(why)) => why,
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    #[test]
    fn good_bind_resolves_inside_the_grant() {
        let s = Scratch::new("good");
        let mut r = bind("/data/vols/v1");
        r.target = "/var/lib/kubelet//pods/p1/./volumes/v1/mount/".into();
        r.options = vec!["nosuid".into(), "nodev".into(), "ro".into()];
        let got = validate_mounts(&[r], &s.publish()).unwrap();
        let host = fs::canonicalize(s.0.join("grant/vols/v1")).unwrap();
        assert_eq!(
            got,
            vec![Mount {
                source: Source::Bind(host),
                target: TARGET.into(),
                read_only: true,
                options: vec!["nosuid".into(), "nodev".into(), "ro".into()],
            }]
        );
        // The whole grant may be exposed, and an empty plan is fine.
        validate_mounts(&[bind("/data")], &s.publish()).unwrap();
        assert!(validate_mounts(&[], &s.publish()).unwrap().is_empty());
    }

    #[test]
    fn bind_outside_the_grant_is_denied() {
        let s = Scratch::new("outside");
        let why = denial(&[bind("/etc")], &s.publish());
        assert_eq!(
            why,
            "mount 0 bind source \"/etc\" is not under the plugin's data directory \"/data\""
        );
        // A shared string prefix is not a path prefix.
        assert!(denial(&[bind("/database/x")], &s.publish()).contains("not under"));
        assert!(denial(&[bind("data/vols/v1")], &s.publish()).contains("absolute path"));
        // A relative grant prefix is refused rather than joined.
        let ctx = MountContext {
            grant_guest: "data".into(),
            ..s.publish()
        };
        assert!(denial(&[bind("/data/vols/v1")], &ctx).contains("not under"));
    }

    #[test]
    fn dotdot_escape_is_denied() {
        let s = Scratch::new("dotdot");
        for p in ["/data/../etc", "/data/vols/../../outside", "/data/vols/.."] {
            let why = denial(&[bind(p)], &s.publish());
            assert!(why.contains("without '..'"), "{p}: {why}");
        }
    }

    #[test]
    fn symlink_out_of_the_grant_is_denied() {
        let s = Scratch::new("symlink");
        symlink(s.0.join("outside"), s.0.join("grant/escape")).unwrap();
        symlink("/etc", s.0.join("grant/vols/etc")).unwrap();
        let why = denial(&[bind("/data/escape")], &s.publish());
        assert!(why.contains("outside the plugin's data directory"), "{why}");
        let why = denial(&[bind("/data/vols/etc")], &s.publish());
        assert!(why.contains("resolves to \"/etc\""), "{why}");
        // A symlink that stays inside is fine, and resolves to its destination.
        symlink("vols/v1", s.0.join("grant/inside")).unwrap();
        let got = validate_mounts(&[bind("/data/inside")], &s.publish()).unwrap();
        assert_eq!(
            got[0].source,
            Source::Bind(fs::canonicalize(s.0.join("grant/vols/v1")).unwrap())
        );
    }

    #[test]
    fn missing_or_non_directory_bind_source_is_denied() {
        let s = Scratch::new("missing");
        assert!(denial(&[bind("/data/nope")], &s.publish()).contains("cannot be resolved"));
        fs::write(s.0.join("grant/file"), b"x").unwrap();
        assert!(denial(&[bind("/data/file")], &s.publish()).contains("not a directory"));
    }

    #[test]
    fn wrong_target_is_denied() {
        let s = Scratch::new("target");
        let mut r = bind("/data/vols/v1");
        r.target = "/var/lib/kubelet/pods/p2/volumes/v1/mount".into();
        let why = denial(&[r], &s.publish());
        assert!(why.contains("is not the request's target_path"), "{why}");

        // Going through '..' to the right place is still refused.
        let mut r = bind("/data/vols/v1");
        r.target = format!("{TARGET}/../mount").into();
        assert!(denial(&[r], &s.publish()).contains("without '..'"));

        // In a stage, only the staging path is a valid target; the publish path is not.
        let stage = s.stage();
        let why = denial(&[bind("/data/vols/v1")], &stage);
        assert!(
            why.contains("is not the request's staging_target_path"),
            "{why}"
        );
        let mut r = bind("/data/vols/v1");
        r.target = s.0.join("staging");
        validate_mounts(&[r], &stage).unwrap();

        let none = MountContext {
            target_path: None,
            staging_path: None,
            ..s.publish()
        };
        assert!(denial(&[bind("/data/vols/v1")], &none).contains("neither"));
    }

    #[test]
    fn two_mounts_on_one_target_are_denied() {
        let s = Scratch::new("twice");
        let mut second = req(RequestSource::Tmpfs(1 << 20));
        second.target = format!("{TARGET}/").into();
        let why = denial(&[bind("/data/vols/v1"), second], &s.publish());
        assert!(why.starts_with("mount 1 target"), "{why}");
        assert!(why.contains("mounted more than once"), "{why}");

        let five = vec![req(RequestSource::Tmpfs(0)); 5];
        assert_eq!(
            denial(&five, &s.publish()),
            "the plan has 5 mounts, at most 4 are allowed"
        );
    }

    #[test]
    fn staged_needs_a_publish_with_a_staging_path() {
        let s = Scratch::new("staged");
        let got = validate_mounts(&[req(RequestSource::Staged)], &s.publish()).unwrap();
        assert_eq!(
            got[0].source,
            Source::Bind(fs::canonicalize(s.0.join("staging")).unwrap())
        );

        let no_staging = MountContext {
            staging_path: None,
            ..s.publish()
        };
        let why = denial(&[req(RequestSource::Staged)], &no_staging);
        assert!(
            why.contains("needs a publish request with a staging path"),
            "{why}"
        );

        // Staging onto itself.
        let mut r = req(RequestSource::Staged);
        r.target = s.0.join("staging");
        assert!(denial(&[r], &s.stage()).contains("needs a publish request"));

        // Publish before stage: the host's state, not a policy question.
        let unstaged = MountContext {
            staging_path: Some(s.0.join("not-staged")),
            ..s.publish()
        };
        assert!(matches!(
            validate_mounts(&[req(RequestSource::Staged)], &unstaged),
            Err(EffectError::NotFound(p)) if p.ends_with("not-staged")
        ));
    }

    #[test]
    fn bad_options_are_denied() {
        let s = Scratch::new("options");
        for bad in [
            "suid", "dev", "exec", "remount", "bind", "size=1G", "", "NOSUID",
        ] {
            let mut r = bind("/data/vols/v1");
            r.options = vec!["nosuid".into(), bad.into()];
            let why = denial(&[r], &s.publish());
            assert!(
                why.starts_with(&format!("mount 0 option {bad:?} is not allowed")),
                "{why}"
            );
        }
        let mut r = bind("/data/vols/v1");
        r.read_only = true;
        r.options = vec!["rw".into()];
        assert!(denial(&[r], &s.publish()).contains("contradicts a read-only mount"));

        let mut r = bind("/data/vols/v1");
        r.options = vec!["noatime".into(), "strictatime".into()];
        assert!(denial(&[r], &s.publish()).contains("noatime and strictatime contradict"));

        let mut r = req(RequestSource::Tmpfs(0));
        r.options = ALLOWED_OPTIONS
            .iter()
            .filter(|o| !["rw", "relatime", "strictatime"].contains(o))
            .map(|o| o.to_string())
            .collect();
        validate_mounts(&[r], &s.publish()).unwrap();
    }

    #[test]
    fn tmpfs_size_is_capped() {
        let s = Scratch::new("tmpfs");
        let why = denial(
            &[req(RequestSource::Tmpfs(MAX_TMPFS_BYTES + 1))],
            &s.publish(),
        );
        assert_eq!(
            why,
            "mount 0 tmpfs size 68719476737 is larger than 68719476736 bytes"
        );
        let got =
            validate_mounts(&[req(RequestSource::Tmpfs(MAX_TMPFS_BYTES))], &s.publish()).unwrap();
        assert_eq!(got[0].source, Source::Tmpfs(MAX_TMPFS_BYTES));
    }

    #[test]
    fn every_allowed_option_has_flags() {
        for o in ALLOWED_OPTIONS {
            assert!(option_flags(o).is_some(), "{o}");
        }
    }
}
