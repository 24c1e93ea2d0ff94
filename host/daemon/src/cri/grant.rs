//! What each runtime hook may change: its `[plugins.NAME.grant]`, and the one check of a hook's
//! adjustment against it, run on each hook's adjustment before it is merged with the others'.
//!
//! NRI plugins are trusted native code on the node; a wasmgate hook is sandboxed code the node
//! need not trust, so its adjustment is data that is held to a grant. Safe by default: a hook
//! may set and remove annotations, labels and environment variables, except those that make a
//! loader or an interpreter run other code ([`ENV_DENY`]). Everything else (mounts, devices,
//! resources, args, the image, removing mounts or devices) must be granted.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use wasmgate_engine::bindings::cri_types as wit;

/// Environment variables no hook may set unless granted by name in `env_allow`: they make the
/// dynamic loader, libc or a language runtime load or run code the image did not bring. A
/// trailing `*` matches a prefix.
pub const ENV_DENY: &[&str] = &[
    // The dynamic loader (glibc, musl): LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, LD_DEBUG_OUTPUT…
    "LD_*",
    // glibc: tunables (CVE-2023-4911), iconv modules, malloc tracing to a file, locale data.
    "GLIBC_TUNABLES",
    "GCONV_PATH",
    "MALLOC_TRACE",
    "LOCPATH",
    "NLSPATH",
    // Which binary a relative command runs.
    "PATH",
    // Shells: files sourced or code run at start.
    "BASH_ENV",
    "ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "PROMPT_COMMAND",
    // Interpreters: modules loaded and options given before the program's own.
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PERL5LIB",
    "PERL5OPT",
    "PERLLIB",
    "RUBYOPT",
    "RUBYLIB",
    "NODE_OPTIONS",
    "NODE_PATH",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "CLASSPATH",
];

/// `[plugins.NAME.grant]`: what a runtime hook's adjustments may change beyond annotations,
/// labels and environment variables. Runtime hooks only; every key defaults to nothing granted.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HookGrant {
    /// Host paths the hook may bind-mount, read-only, by prefix (whole path components:
    /// `/var/lib/hook-data` grants `/var/lib/hook-data/x`, not `/var/lib/hook-data2`). Default
    /// none: no mounts.
    pub mounts: Vec<PathBuf>,
    /// Host path prefixes the hook may also bind-mount read-write. Default none.
    pub mounts_rw: Vec<PathBuf>,
    /// Devices the hook may add, as `HOST_PATH:PERMISSIONS` (`/dev/fuse:rw`); a device's
    /// cgroup permissions must be among those granted for its exact host path. Default none.
    pub devices: Vec<String>,
    /// `tighten`: resources may only be lowered (limits lowered or set, never raised or
    /// removed); `any`: any change. Default none: resources may not be changed.
    pub resources: Option<ResourcesGrant>,
    /// Whether the hook may replace the container's args. Default false.
    pub args: bool,
    /// Registries (`host[:port]`, optionally with a path prefix) the hook may rewrite an image
    /// reference to, compared by whole components after docker's normalisation (`busybox` is
    /// `docker.io/library/busybox`). Default none: no image rewrite.
    pub image_registries: Vec<String>,
    /// Whether the hook may remove mounts and devices, or replace one the request has at the
    /// same container path. Default false.
    pub removals: bool,
    /// More environment variable names to refuse, beside [`ENV_DENY`]; a trailing `*` is a
    /// prefix. Default none.
    pub env_deny: Vec<String>,
    /// Names from [`ENV_DENY`] this hook may set after all, exactly as listed there or by exact
    /// variable name (`LD_LIBRARY_PATH`). Default none.
    pub env_allow: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ResourcesGrant {
    Tighten,
    Any,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GrantError {
    #[error("grant.{key}: {path:?} must be an absolute path without `..`")]
    NotAbsolute { key: &'static str, path: PathBuf },
    #[error(
        "grant.devices: {0:?} must be HOST_PATH:PERMISSIONS, an absolute path and some of r, w, m"
    )]
    Device(String),
    #[error(
        "grant.image_registries: {0:?} must be host[:port][/path] without a scheme, tag or digest"
    )]
    Registry(String),
}

impl HookGrant {
    /// Refuses a grant that could not mean what it says.
    pub fn validate(&self) -> Result<(), GrantError> {
        for (key, list) in [("mounts", &self.mounts), ("mounts_rw", &self.mounts_rw)] {
            if let Some(p) = list.iter().find(|p| normalise(p).is_none()) {
                return Err(GrantError::NotAbsolute {
                    key,
                    path: p.clone(),
                });
            }
        }
        for d in &self.devices {
            parse_device(d).ok_or_else(|| GrantError::Device(d.clone()))?;
        }
        for r in &self.image_registries {
            let bad = r.is_empty()
                || r.contains("://")
                || r.contains('@')
                || r.starts_with('/')
                || r.split('/').any(str::is_empty)
                || r.split('/').skip(1).any(|c| c.contains(':'));
            if bad {
                return Err(GrantError::Registry(r.clone()));
            }
        }
        Ok(())
    }

    /// Checks `hook`'s adjustment of `req` against this grant. The error names the hook and the
    /// first field it may not change: `hook inject may not add mounts`.
    pub fn check(&self, hook: &str, a: &wit::Adjustment, req: &wit::Request) -> Result<(), String> {
        let refuse = |what: String| Err(format!("hook {hook} may not {what}"));
        let container = match req {
            wit::Request::CreateContainer((_, c)) | wit::Request::UpdateContainer((_, c)) => {
                Some(c)
            }
            _ => None,
        };
        for (k, _) in &a.env {
            if let Some(rule) = self.env_denied(k) {
                return refuse(format!("set env {k} (denied by {rule:?})"));
            }
        }
        if !self.removals {
            if !a.remove_mounts.is_empty() {
                return refuse(format!("remove mounts ({})", a.remove_mounts.join(", ")));
            }
            if !a.remove_devices.is_empty() {
                return refuse(format!("remove devices ({})", a.remove_devices.join(", ")));
            }
        }
        if !a.mounts.is_empty() && self.mounts.is_empty() && self.mounts_rw.is_empty() {
            return refuse("add mounts".into());
        }
        for m in &a.mounts {
            self.check_mount(m).or_else(refuse)?;
            let replaces = container.is_some_and(|c| {
                c.mounts
                    .iter()
                    .any(|x| x.container_path == m.container_path)
            });
            if replaces && !self.removals {
                return refuse(format!(
                    "replace the mount at {:?} (removals not granted)",
                    m.container_path
                ));
            }
        }
        if !a.devices.is_empty() && self.devices.is_empty() {
            return refuse("add devices".into());
        }
        for d in &a.devices {
            self.check_device(d).or_else(refuse)?;
            let replaces = container.is_some_and(|c| {
                c.devices
                    .iter()
                    .any(|x| x.container_path == d.container_path)
            });
            if replaces && !self.removals {
                return refuse(format!(
                    "replace the device at {:?} (removals not granted)",
                    d.container_path
                ));
            }
        }
        if let Some(r) = &a.resources {
            match self.resources {
                None => return refuse("change resources".into()),
                Some(ResourcesGrant::Any) => {}
                Some(ResourcesGrant::Tighten) => {
                    let before = container.and_then(|c| c.resources.clone());
                    tightens(before.as_ref(), r)
                        .map_err(|why| format!("hook {hook} may only tighten resources: {why}"))?;
                }
            }
        }
        if a.args.is_some() && !self.args {
            return refuse("replace args".into());
        }
        if let Some(image) = &a.image {
            if self.image_registries.is_empty() {
                return refuse(format!("rewrite the image to {image:?}"));
            }
            let name = normalise_image(image);
            if !self
                .image_registries
                .iter()
                .any(|r| component_prefix(r, &name))
            {
                return refuse(format!(
                    "rewrite the image to {image:?} (granted registries: {})",
                    self.image_registries.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The deny-list entry `name` falls under, unless this hook is allowed it.
    fn env_denied(&self, name: &str) -> Option<String> {
        let hit = |rule: &str| match rule.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == rule,
        };
        let rule = ENV_DENY
            .iter()
            .map(|r| r.to_string())
            .chain(self.env_deny.iter().cloned())
            .find(|r| hit(r))?;
        let allowed = self.env_allow.iter().any(|a| *a == rule || a == name)
            // An operator's own deny entry wins over an allow of the built-in one.
            && !self.env_deny.iter().any(|r| hit(r));
        (!allowed).then_some(rule)
    }

    fn check_mount(&self, m: &wit::Mount) -> Result<(), String> {
        let Some(host) = normalise(Path::new(&m.host_path)) else {
            return Err(format!(
                "mount host path {:?} (not an absolute path without `..`)",
                m.host_path
            ));
        };
        let under = |list: &[PathBuf]| {
            list.iter()
                .filter_map(|p| normalise(p))
                .any(|p| host.starts_with(p))
        };
        if under(&self.mounts_rw) {
            return Ok(());
        }
        if !under(&self.mounts) {
            return Err(format!(
                "mount host path {:?} (granted: {})",
                m.host_path,
                paths(self.mounts.iter().chain(&self.mounts_rw))
            ));
        }
        if !m.readonly {
            return Err(format!(
                "mount host path {:?} read-write (granted read-write: {})",
                m.host_path,
                paths(self.mounts_rw.iter())
            ));
        }
        Ok(())
    }

    fn check_device(&self, d: &wit::Device) -> Result<(), String> {
        let host = normalise(Path::new(&d.host_path));
        let granted = self
            .devices
            .iter()
            .filter_map(|g| parse_device(g))
            .find(|(p, _)| Some(p) == host.as_ref());
        let ok = granted.as_ref().is_some_and(|(_, perms)| {
            !d.permissions.is_empty() && d.permissions.chars().all(|c| perms.contains(c))
        });
        if ok {
            Ok(())
        } else {
            Err(format!(
                "add device {:?} with {:?} (granted: {})",
                d.host_path,
                d.permissions,
                self.devices.join(", ")
            ))
        }
    }
}

fn paths<'a>(list: impl Iterator<Item = &'a PathBuf>) -> String {
    let v: Vec<String> = list
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// `p` absolute, with `.` and repeated separators gone; `None` for a relative path or one with
/// `..`, which could climb out of any prefix it was compared with.
fn normalise(p: &Path) -> Option<PathBuf> {
    if !p.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// `/dev/fuse:rw` as its normalised path and permissions.
fn parse_device(g: &str) -> Option<(PathBuf, String)> {
    let (path, perms) = g.rsplit_once(':')?;
    let ok = !perms.is_empty() && perms.chars().all(|c| matches!(c, 'r' | 'w' | 'm'));
    ok.then_some(())?;
    Some((normalise(Path::new(path))?, perms.to_string()))
}

/// An image reference as `registry/path`, without tag or digest, after docker's defaults:
/// `busybox` is `docker.io/library/busybox`, `me/app` is `docker.io/me/app`.
fn normalise_image(image: &str) -> String {
    let name = image.split('@').next().unwrap_or_default();
    // A tag follows the last `:` after the last `/`; a `:` before it is a registry's port.
    let name = match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    };
    let (first, rest) = name.split_once('/').unwrap_or(("", name));
    let has_registry = first.contains('.')
        || first.contains(':')
        || first == "localhost"
        || first.chars().any(|c| c.is_ascii_uppercase());
    if has_registry {
        // Hosts compare case-insensitively; Docker Hub has two names.
        match first.to_ascii_lowercase() {
            host if host == "index.docker.io" => format!("docker.io/{rest}"),
            host => format!("{host}/{rest}"),
        }
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    }
}

/// Whether `prefix` is `name` or its leading path components.
fn component_prefix(prefix: &str, name: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    let prefix = match prefix.split_once('/') {
        Some((host, path)) => format!("{}/{path}", host.to_ascii_lowercase()),
        None => prefix.to_ascii_lowercase(),
    };
    name == prefix
        || name
            .strip_prefix(&prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Whether `after` only lowers what `before` allowed: no limit removed or raised, no CPU or
/// memory set widened. Zero or empty is unset, as in the CRI.
fn tightens(before: Option<&wit::Resources>, after: &wit::Resources) -> Result<(), String> {
    let unset = wit::Resources {
        cpu_period: 0,
        cpu_quota: 0,
        cpu_shares: 0,
        memory_limit_bytes: 0,
        cpuset_cpus: String::new(),
        cpuset_mems: String::new(),
    };
    let b = before.unwrap_or(&unset);
    if b.memory_limit_bytes > 0
        && (after.memory_limit_bytes <= 0 || after.memory_limit_bytes > b.memory_limit_bytes)
    {
        return Err(format!(
            "memory limit {} would become {}",
            b.memory_limit_bytes,
            limit(after.memory_limit_bytes)
        ));
    }
    // The CPU limit is quota over period; the kernel's default period is 100 ms.
    let cpus = |r: &wit::Resources| {
        (r.cpu_quota > 0).then(|| {
            let period = if r.cpu_period > 0 {
                r.cpu_period
            } else {
                100_000
            };
            r.cpu_quota as f64 / period as f64
        })
    };
    if let Some(was) = cpus(b) {
        match cpus(after) {
            Some(now) if now <= was => {}
            now => {
                return Err(format!(
                    "cpu limit {was} cpus would become {}",
                    now.map_or("unlimited".into(), |n| format!("{n} cpus"))
                ));
            }
        }
    }
    // Shares weigh CPU under contention; unset is the kernel's default of 1024.
    let shares = |s: i64| if s > 0 { s } else { 1024 };
    if shares(after.cpu_shares) > shares(b.cpu_shares) {
        return Err(format!(
            "cpu shares {} would become {}",
            shares(b.cpu_shares),
            after.cpu_shares
        ));
    }
    for (what, was, now) in [
        ("cpuset cpus", &b.cpuset_cpus, &after.cpuset_cpus),
        ("cpuset mems", &b.cpuset_mems, &after.cpuset_mems),
    ] {
        if !subset(now, was) {
            return Err(format!("{what} {was:?} would become {now:?}"));
        }
    }
    Ok(())
}

fn limit(n: i64) -> String {
    if n > 0 {
        n.to_string()
    } else {
        "unlimited".into()
    }
}

/// Whether cpuset list `now` (`0-3,6`) is within `was`; empty is every CPU. A list that does not
/// parse is within nothing.
fn subset(now: &str, was: &str) -> bool {
    fn parse(s: &str) -> Option<Vec<(u32, u32)>> {
        s.split(',')
            .map(|r| {
                let r = r.trim();
                let (a, b) = r.split_once('-').unwrap_or((r, r));
                let (a, b) = (a.parse().ok()?, b.parse().ok()?);
                (a <= b).then_some((a, b))
            })
            .collect()
    }
    if was.trim().is_empty() {
        return now.trim().is_empty() || parse(now).is_some();
    }
    if now.trim().is_empty() {
        return false;
    }
    let (Some(now), Some(was)) = (parse(now), parse(was)) else {
        return false;
    };
    now.iter()
        .all(|&(a, b)| (a..=b).all(|c| was.iter().any(|&(x, y)| x <= c && c <= y)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adj() -> wit::Adjustment {
        super::super::view::empty_adjustment()
    }

    fn res(mem: i64, quota: i64, shares: i64, cpus: &str) -> wit::Resources {
        wit::Resources {
            cpu_period: 100_000,
            cpu_quota: quota,
            cpu_shares: shares,
            memory_limit_bytes: mem,
            cpuset_cpus: cpus.into(),
            cpuset_mems: String::new(),
        }
    }

    fn create(mounts: &[&str], r: Option<wit::Resources>) -> wit::Request {
        let mut c = super::super::view::container_from_config(&Default::default(), "");
        c.mounts = mounts
            .iter()
            .map(|p| wit::Mount {
                container_path: p.to_string(),
                host_path: "/var/lib/kubelet/x".into(),
                readonly: true,
            })
            .collect();
        c.resources = r;
        let pod = super::super::view::pod_from_config(&Default::default(), "", "");
        wit::Request::CreateContainer((pod, c))
    }

    fn mount(host: &str, ro: bool) -> wit::Mount {
        wit::Mount {
            container_path: "/data".into(),
            host_path: host.into(),
            readonly: ro,
        }
    }

    #[test]
    fn the_default_grant_is_annotations_labels_and_safe_env() {
        let g = HookGrant::default();
        let req = create(&[], None);
        let mut a = adj();
        a.env = vec![("NODE".into(), "n1".into())];
        a.annotations = vec![("a".into(), "b".into())];
        a.remove_labels = vec!["l".into()];
        a.remove_env = vec!["LD_PRELOAD".into()];
        g.check("inject", &a, &req).unwrap();
        for name in [
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "LD_AUDIT",
            "GLIBC_TUNABLES",
            "PATH",
        ] {
            let mut a = adj();
            a.env = vec![(name.into(), "x".into())];
            let err = g.check("inject", &a, &req).unwrap_err();
            assert!(
                err.starts_with(&format!("hook inject may not set env {name}")),
                "{err}"
            );
        }
        let mut a = adj();
        a.mounts = vec![mount("/var/lib/hook-data", true)];
        assert_eq!(
            g.check("inject", &a, &req).unwrap_err(),
            "hook inject may not add mounts"
        );
        let mut a = adj();
        a.args = Some(vec!["sh".into()]);
        assert_eq!(
            g.check("inject", &a, &req).unwrap_err(),
            "hook inject may not replace args"
        );
        let mut a = adj();
        a.remove_mounts = vec!["/var/run/secrets/kubernetes.io/serviceaccount".into()];
        assert!(
            g.check("inject", &a, &req)
                .unwrap_err()
                .starts_with("hook inject may not remove mounts")
        );
        let mut a = adj();
        a.resources = Some(res(1 << 20, 0, 0, ""));
        assert_eq!(
            g.check("inject", &a, &req).unwrap_err(),
            "hook inject may not change resources"
        );
    }

    #[test]
    fn env_lists_extend_and_lift_the_deny_list() {
        let g = HookGrant {
            env_deny: vec!["SECRET_*".into()],
            env_allow: vec!["LD_LIBRARY_PATH".into()],
            ..Default::default()
        };
        let req = create(&[], None);
        let mut a = adj();
        a.env = vec![("LD_LIBRARY_PATH".into(), "/opt".into())];
        g.check("h", &a, &req).unwrap();
        a.env = vec![("LD_PRELOAD".into(), "/x.so".into())];
        assert!(g.check("h", &a, &req).is_err());
        a.env = vec![("SECRET_TOKEN".into(), "x".into())];
        assert!(g.check("h", &a, &req).unwrap_err().contains("SECRET_*"));
    }

    #[test]
    fn mounts_compare_normalised_paths_by_component() {
        let g = HookGrant {
            mounts: vec!["/var/lib/hook-data/".into()],
            mounts_rw: vec!["/var/lib/hook-data/rw".into()],
            ..Default::default()
        };
        g.validate().unwrap();
        let req = create(&["/etc/hosts"], None);
        let check = |m: wit::Mount| {
            let mut a = adj();
            a.mounts = vec![m];
            g.check("x", &a, &req)
        };
        check(mount("/var/lib/hook-data", true)).unwrap();
        check(mount("/var/lib/hook-data/a/./b", true)).unwrap();
        check(mount("/var/lib/hook-data/rw/c", false)).unwrap();
        let err = check(mount("/", false)).unwrap_err();
        assert!(
            err.starts_with(
                "hook x may not mount host path \"/\" (granted: \"/var/lib/hook-data/\""
            ),
            "{err}"
        );
        assert!(check(mount("/var/lib/hook-data2", true)).is_err());
        assert!(check(mount("/var/lib/hook-data/../../../etc", true)).is_err());
        assert!(check(mount("var/lib/hook-data", true)).is_err());
        let err = check(mount("/var/lib/hook-data/a", false)).unwrap_err();
        assert!(err.contains("read-write"), "{err}");
        // Over a mount the request has: a removal.
        let mut m = mount("/var/lib/hook-data", true);
        m.container_path = "/etc/hosts".into();
        assert!(check(m).unwrap_err().contains("replace the mount"));
    }

    #[test]
    fn devices_need_their_path_and_permissions_granted() {
        let g = HookGrant {
            devices: vec!["/dev/fuse:rw".into()],
            ..Default::default()
        };
        g.validate().unwrap();
        let req = create(&[], None);
        let check = |host: &str, perms: &str| {
            let mut a = adj();
            a.devices = vec![wit::Device {
                container_path: "/dev/x".into(),
                host_path: host.into(),
                permissions: perms.into(),
            }];
            g.check("x", &a, &req)
        };
        check("/dev/fuse", "rw").unwrap();
        check("/dev/fuse", "r").unwrap();
        assert!(check("/dev/fuse", "rwm").is_err());
        assert!(check("/dev/mem", "r").unwrap_err().contains("/dev/mem"));
        assert!(
            HookGrant::default()
                .check(
                    "x",
                    &{
                        let mut a = adj();
                        a.devices = vec![wit::Device {
                            container_path: "/dev/mem".into(),
                            host_path: "/dev/mem".into(),
                            permissions: "rwm".into(),
                        }];
                        a
                    },
                    &req
                )
                .unwrap_err()
                .ends_with("may not add devices")
        );
    }

    #[test]
    fn tighten_lowers_and_never_removes_a_limit() {
        let g = HookGrant {
            resources: Some(ResourcesGrant::Tighten),
            ..Default::default()
        };
        let before = res(64 << 20, 50_000, 512, "0-3");
        let req = create(&[], Some(before.clone()));
        let check = |r: wit::Resources| {
            let mut a = adj();
            a.resources = Some(r);
            g.check("x", &a, &req)
        };
        check(res(32 << 20, 20_000, 256, "1,2")).unwrap();
        check(res(64 << 20, 50_000, 512, "0-3")).unwrap();
        assert!(
            check(res(0, 50_000, 512, "0-3"))
                .unwrap_err()
                .contains("memory")
        );
        assert!(check(res(128 << 20, 50_000, 512, "0-3")).is_err());
        assert!(
            check(res(64 << 20, 0, 512, "0-3"))
                .unwrap_err()
                .contains("cpu limit")
        );
        assert!(check(res(64 << 20, 50_000, 2048, "0-3")).is_err());
        assert!(check(res(64 << 20, 50_000, 512, "")).is_err());
        assert!(check(res(64 << 20, 50_000, 512, "0-4")).is_err());
        // From unlimited, any limit tightens.
        let req = create(&[], None);
        let mut a = adj();
        a.resources = Some(res(1 << 20, 10_000, 0, "0"));
        g.check("x", &a, &req).unwrap();
        let any = HookGrant {
            resources: Some(ResourcesGrant::Any),
            ..Default::default()
        };
        a.resources = Some(res(0, 0, 0, ""));
        any.check("x", &a, &create(&[], Some(before))).unwrap();
    }

    #[test]
    fn images_move_only_to_granted_registries() {
        let g = HookGrant {
            image_registries: vec!["mirror.local:5000".into(), "docker.io/library".into()],
            ..Default::default()
        };
        g.validate().unwrap();
        let req = create(&[], None);
        let check = |image: &str| {
            let mut a = adj();
            a.image = Some(image.into());
            g.check("mirror", &a, &req)
        };
        check("mirror.local:5000/library/busybox:1.36").unwrap();
        check("mirror.local:5000/x@sha256:0123").unwrap();
        check("busybox:latest").unwrap();
        check("Mirror.Local:5000/x").unwrap();
        assert!(check("mirror.local:50000/x").is_err());
        assert!(
            check("evil.example/library/busybox")
                .unwrap_err()
                .contains("granted registries")
        );
        assert!(check("me/busybox").is_err());
        assert!(
            HookGrant {
                image_registries: vec!["https://x".into()],
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }
}
