//! Where the node RPCs may act: kubelet's own directories, nowhere else.
//!
//! A socket client names the paths of NodeStage, NodePublish, NodeUnstage and NodeUnpublish. The
//! host mounts on them, unmounts them and removes them, so without this check a client could
//! shadow `/etc/cron.d` or take down someone else's mount. Kubelet stages under
//! `<kubelet_dir>/plugins/kubernetes.io/csi/` (`<driver>/<hash>/globalmount`, or the older
//! `pv/<name>/globalmount`) and publishes under `<kubelet_dir>/pods/`; nothing else is accepted.
//! The directories between `kubelet_dir` and the path must not be symlinks, which would lead a
//! lexically fine path anywhere on the node.

use std::io;
use std::path::{Path, PathBuf};

use super::{ServiceError, required_path};

/// Below which of kubelet's directories a path must lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// `staging_target_path`.
    Staging,
    /// `target_path`.
    Target,
}

impl Area {
    fn dir(self) -> &'static str {
        match self {
            Area::Staging => "plugins/kubernetes.io/csi",
            Area::Target => "pods",
        }
    }
}

/// kubelet's root directory (`[csi] kubelet_dir`) and the checks against it.
#[derive(Debug, Clone)]
pub struct KubeletPaths {
    root: PathBuf,
}

impl KubeletPaths {
    pub fn new(kubelet_dir: &Path) -> Self {
        Self {
            root: kubelet_dir.components().collect(),
        }
    }

    /// `value`, the request's `field`, normalised, once it is an absolute path strictly below
    /// `area` whose existing directories from `kubelet_dir` down are real directories, not
    /// symlinks. INVALID_ARGUMENT naming the path and the rule otherwise. Whatever does not exist
    /// yet is created by the mount, without following links.
    pub fn check(&self, value: &str, field: &str, area: Area) -> Result<PathBuf, ServiceError> {
        let path = required_path(value, field)?;
        let base = self.root.join(area.dir());
        let refuse = |why: String| {
            let e = ServiceError::Invalid(format!("{field} {value:?} {why}"));
            tracing::warn!("refused node path: {e}");
            e
        };
        match path.strip_prefix(&base) {
            Ok(rest) if rest.components().next().is_some() => {}
            _ => return Err(refuse(format!("must lie under {}", base.display()))),
        }
        // Only the parents: the path itself may be a mount point, and a symlink there is refused
        // by the mount (which never follows one) and is not a mount point to unmount.
        let below: Vec<_> = path
            .strip_prefix(&self.root)
            .unwrap_or(&path)
            .components()
            .collect();
        let mut dir = self.root.clone();
        for c in &below[..below.len() - 1] {
            dir.push(c);
            // A caller's path can lead into a hung mount: lstat must not pin a worker.
            match crate::blocking::off_worker(|| std::fs::symlink_metadata(&dir)) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(refuse(format!(
                        "passes through the symlink {}; no directory between {} and the path may be one",
                        dir.display(),
                        self.root.display()
                    )));
                }
                Ok(m) if !m.is_dir() => {
                    return Err(refuse(format!(
                        "passes through {}, not a directory",
                        dir.display()
                    )));
                }
                Ok(_) => {}
                // The rest does not exist either: nothing there to follow.
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => {
                    return Err(refuse(format!(
                        "cannot be checked at {}: {e}",
                        dir.display()
                    )));
                }
            }
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<PathBuf, ServiceError>) -> String {
        match r {
            Ok(p) => panic!("accepted {p:?}"),
            Err(e) => {
                assert!(matches!(e, ServiceError::Invalid(_)), "{e:?}");
                e.to_string()
            }
        }
    }

    #[test]
    fn paths_must_lie_in_their_area_without_symlinks() {
        let root = std::env::temp_dir().join(format!("wg-kubelet-paths-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let csi = root.join("plugins/kubernetes.io/csi");
        std::fs::create_dir_all(csi.join("drv/h1")).unwrap();
        std::fs::create_dir_all(root.join("pods/p1/volumes")).unwrap();
        std::fs::create_dir_all(root.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere"), root.join("pods/p2")).unwrap();
        std::fs::write(root.join("pods/file"), "").unwrap();
        let k = KubeletPaths::new(&root);
        let s = |p: &Path| p.to_string_lossy().into_owned();

        let staging = csi.join("drv/h1/globalmount");
        assert_eq!(k.check(&s(&staging), "f", Area::Staging).unwrap(), staging);
        // Missing directories are created by the mount later.
        let target = root.join("pods/p1/volumes/kubernetes.io~csi/pv/mount");
        assert_eq!(
            k.check(&format!("{}/", s(&target)), "f", Area::Target)
                .unwrap(),
            target
        );

        let m = code(k.check(&s(&staging), "target_path", Area::Target));
        assert!(m.contains("must lie under") && m.contains("/pods"), "{m}");
        let m = code(k.check(&s(&target), "f", Area::Staging));
        assert!(m.contains("plugins/kubernetes.io/csi"), "{m}");
        code(k.check("/etc/cron.d", "f", Area::Target));
        code(k.check(&s(&root.join("pods")), "f", Area::Target));
        code(k.check(&s(&root.join("pods/../etc")), "f", Area::Target));
        let m = code(k.check(&s(&root.join("pods/p2/mount")), "f", Area::Target));
        assert!(m.contains("symlink"), "{m}");
        let m = code(k.check(&s(&root.join("pods/file/mount")), "f", Area::Target));
        assert!(m.contains("not a directory"), "{m}");
        // A symlink as the last component is the mount's to refuse, not a parent.
        k.check(&s(&root.join("pods/p2")), "f", Area::Target)
            .unwrap();
        std::fs::remove_dir_all(&root).unwrap();
    }
}
