//! runtime.v1 messages to the hook world's typed views, and hooks' adjustments back onto the
//! request. The views are in the newest runtime-hook WIT version; the engine converts them down
//! for a hook built against an older one (`wasmgate_engine::hook`).

use std::collections::{BTreeMap, HashMap};

use wasmgate_engine::bindings::cri_types as wit;
use wasmgate_proto::cri::v1 as pb;

fn map(m: &HashMap<String, String>) -> wit::StringMap {
    let mut v: Vec<_> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort();
    v
}

pub fn pod_from_config(c: &pb::PodSandboxConfig, id: &str, handler: &str) -> wit::Pod {
    let md = c.metadata.clone().unwrap_or_default();
    wit::Pod {
        id: id.to_string(),
        name: md.name,
        namespace: md.namespace,
        uid: md.uid,
        labels: map(&c.labels),
        annotations: map(&c.annotations),
        runtime_handler: handler.to_string(),
    }
}

pub fn pod_from_status(s: &pb::PodSandboxStatus) -> wit::Pod {
    let md = s.metadata.clone().unwrap_or_default();
    wit::Pod {
        id: s.id.clone(),
        name: md.name,
        namespace: md.namespace,
        uid: md.uid,
        labels: map(&s.labels),
        annotations: map(&s.annotations),
        runtime_handler: s.runtime_handler.clone(),
    }
}

pub fn container_from_config(c: &pb::ContainerConfig, id: &str) -> wit::Container {
    let linux = c.linux.clone().unwrap_or_default();
    let sec = linux.security_context.unwrap_or_default();
    let caps = sec.capabilities.unwrap_or_default();
    wit::Container {
        id: id.to_string(),
        name: c
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default(),
        image: c
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default(),
        command: c.command.clone(),
        args: c.args.clone(),
        env: c
            .envs
            .iter()
            .map(|kv| {
                (
                    kv.key.clone(),
                    String::from_utf8_lossy(&kv.value).into_owned(),
                )
            })
            .collect(),
        mounts: c
            .mounts
            .iter()
            .map(|m| wit::Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.clone(),
                readonly: m.readonly,
            })
            .collect(),
        devices: c
            .devices
            .iter()
            .map(|d| wit::Device {
                container_path: d.container_path.clone(),
                host_path: d.host_path.clone(),
                permissions: d.permissions.clone(),
            })
            .collect(),
        resources: linux.resources.as_ref().map(resources),
        security: wit::Security {
            privileged: sec.privileged,
            run_as_user: sec.run_as_user.map(|u| u.value),
            add_capabilities: caps.add_capabilities,
            drop_capabilities: caps.drop_capabilities,
            readonly_rootfs: sec.readonly_rootfs,
        },
        labels: map(&c.labels),
        annotations: map(&c.annotations),
        working_dir: c.working_dir.clone(),
    }
}

/// What a container-scoped call other than create knows of its container: the runtime's
/// listing, without the config's details (`working-dir` included: empty).
pub fn container_from_listing(c: &pb::Container) -> wit::Container {
    wit::Container {
        id: c.id.clone(),
        name: c
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default(),
        image: c
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default(),
        command: Vec::new(),
        args: Vec::new(),
        env: Vec::new(),
        mounts: Vec::new(),
        devices: Vec::new(),
        resources: None,
        security: wit::Security {
            privileged: false,
            run_as_user: None,
            add_capabilities: Vec::new(),
            drop_capabilities: Vec::new(),
            readonly_rootfs: false,
        },
        labels: map(&c.labels),
        annotations: map(&c.annotations),
        working_dir: String::new(),
    }
}

pub fn resources(r: &pb::LinuxContainerResources) -> wit::Resources {
    wit::Resources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_bytes: r.memory_limit_in_bytes,
        cpuset_cpus: r.cpuset_cpus.clone(),
        cpuset_mems: r.cpuset_mems.clone(),
    }
}

fn apply_resources(to: &mut pb::LinuxContainerResources, r: &wit::Resources) {
    to.cpu_period = r.cpu_period;
    to.cpu_quota = r.cpu_quota;
    to.cpu_shares = r.cpu_shares;
    to.memory_limit_in_bytes = r.memory_limit_bytes;
    to.cpuset_cpus = r.cpuset_cpus.clone();
    to.cpuset_mems = r.cpuset_mems.clone();
}

/// The adjustments of all hooks, merged. A field set by two hooks is a conflict, named with both
/// hooks, as NRI reports it.
#[derive(Default, Debug)]
pub struct Merged {
    annotations: BTreeMap<String, (String, Option<String>)>,
    labels: BTreeMap<String, (String, Option<String>)>,
    env: BTreeMap<String, (String, Option<String>)>,
    mounts: BTreeMap<String, (String, Option<wit::Mount>)>,
    devices: BTreeMap<String, (String, Option<wit::Device>)>,
    resources: Option<(String, wit::Resources)>,
    args: Option<(String, Vec<String>)>,
    image: Option<(String, String)>,
}

fn claim<T>(
    field: &str,
    slot: &mut BTreeMap<String, (String, T)>,
    key: String,
    hook: &str,
    v: T,
) -> Result<(), String> {
    if let Some((other, _)) = slot.get(&key) {
        return Err(format!(
            "hooks {other} and {hook} both change {field} {key:?}"
        ));
    }
    slot.insert(key, (hook.to_string(), v));
    Ok(())
}

fn claim_one<T>(
    field: &str,
    slot: &mut Option<(String, T)>,
    hook: &str,
    v: T,
) -> Result<(), String> {
    if let Some((other, _)) = slot {
        return Err(format!("hooks {other} and {hook} both change {field}"));
    }
    *slot = Some((hook.to_string(), v));
    Ok(())
}

impl Merged {
    pub fn add(&mut self, hook: &str, a: wit::Adjustment) -> Result<(), String> {
        for (k, v) in a.annotations {
            claim("annotation", &mut self.annotations, k, hook, Some(v))?;
        }
        for k in a.remove_annotations {
            claim("annotation", &mut self.annotations, k, hook, None)?;
        }
        for (k, v) in a.labels {
            claim("label", &mut self.labels, k, hook, Some(v))?;
        }
        for k in a.remove_labels {
            claim("label", &mut self.labels, k, hook, None)?;
        }
        for (k, v) in a.env {
            claim("env", &mut self.env, k, hook, Some(v))?;
        }
        for k in a.remove_env {
            claim("env", &mut self.env, k, hook, None)?;
        }
        for m in a.mounts {
            claim(
                "mount",
                &mut self.mounts,
                m.container_path.clone(),
                hook,
                Some(m),
            )?;
        }
        for p in a.remove_mounts {
            claim("mount", &mut self.mounts, p, hook, None)?;
        }
        for d in a.devices {
            claim(
                "device",
                &mut self.devices,
                d.container_path.clone(),
                hook,
                Some(d),
            )?;
        }
        for p in a.remove_devices {
            claim("device", &mut self.devices, p, hook, None)?;
        }
        if let Some(r) = a.resources {
            claim_one("resources", &mut self.resources, hook, r)?;
        }
        if let Some(args) = a.args {
            claim_one("args", &mut self.args, hook, args)?;
        }
        if let Some(image) = a.image {
            claim_one("image", &mut self.image, hook, image)?;
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.annotations.is_empty()
            && self.labels.is_empty()
            && self.env.is_empty()
            && self.mounts.is_empty()
            && self.devices.is_empty()
            && self.resources.is_none()
            && self.args.is_none()
            && self.image.is_none()
    }

    /// What a pod-level call can change: annotations and labels.
    pub fn apply_pod(&self, c: &mut pb::PodSandboxConfig) {
        apply_map(&mut c.annotations, &self.annotations);
        apply_map(&mut c.labels, &self.labels);
    }

    pub fn apply_container(&self, c: &mut pb::ContainerConfig) {
        apply_map(&mut c.annotations, &self.annotations);
        apply_map(&mut c.labels, &self.labels);
        for (k, (_, v)) in &self.env {
            c.envs.retain(|kv| &kv.key != k);
            if let Some(v) = v {
                c.envs.push(pb::KeyValue {
                    key: k.clone(),
                    value: v.clone().into_bytes(),
                });
            }
        }
        for (path, (_, m)) in &self.mounts {
            c.mounts.retain(|x| &x.container_path != path);
            if let Some(m) = m {
                c.mounts.push(pb::Mount {
                    container_path: m.container_path.clone(),
                    host_path: m.host_path.clone(),
                    readonly: m.readonly,
                    ..Default::default()
                });
            }
        }
        for (path, (_, d)) in &self.devices {
            c.devices.retain(|x| &x.container_path != path);
            if let Some(d) = d {
                c.devices.push(pb::Device {
                    container_path: d.container_path.clone(),
                    host_path: d.host_path.clone(),
                    permissions: d.permissions.clone(),
                });
            }
        }
        if let Some((_, r)) = &self.resources {
            let linux = c.linux.get_or_insert_with(Default::default);
            apply_resources(linux.resources.get_or_insert_with(Default::default), r);
        }
        if let Some((_, args)) = &self.args {
            c.args = args.clone();
        }
        if let Some((_, image)) = &self.image {
            c.image.get_or_insert_with(Default::default).image = image.clone();
        }
    }

    pub fn apply_update(&self, r: &mut pb::UpdateContainerResourcesRequest) {
        apply_map(&mut r.annotations, &self.annotations);
        if let Some((_, res)) = &self.resources {
            apply_resources(r.linux.get_or_insert_with(Default::default), res);
        }
    }

    pub fn apply_pull(&self, r: &mut pb::PullImageRequest) {
        let spec = r.image.get_or_insert_with(Default::default);
        apply_map(&mut spec.annotations, &self.annotations);
        if let Some((_, image)) = &self.image {
            spec.image = image.clone();
        }
    }
}

fn apply_map(
    to: &mut HashMap<String, String>,
    changes: &BTreeMap<String, (String, Option<String>)>,
) {
    for (k, (_, v)) in changes {
        match v {
            Some(v) => {
                to.insert(k.clone(), v.clone());
            }
            None => {
                to.remove(k);
            }
        }
    }
}

/// The validation phase: what the request looks like after every hook's adjustments must still
/// be a request the runtime can take.
pub fn validate_container(c: &pb::ContainerConfig) -> Result<(), String> {
    if c.image.as_ref().is_none_or(|i| i.image.is_empty()) {
        return Err("the adjusted container has no image".into());
    }
    if let Some(kv) = c
        .envs
        .iter()
        .find(|kv| kv.key.is_empty() || kv.key.contains('='))
    {
        return Err(format!(
            "the adjusted container has a bad env name {:?}",
            kv.key
        ));
    }
    for m in &c.mounts {
        if !m.container_path.starts_with('/') || m.host_path.is_empty() {
            return Err(format!(
                "the adjusted container has a bad mount {:?} -> {:?}",
                m.host_path, m.container_path
            ));
        }
    }
    for d in &c.devices {
        if !d.container_path.starts_with('/') || !d.host_path.starts_with('/') {
            return Err(format!(
                "the adjusted container has a bad device {:?}",
                d.host_path
            ));
        }
    }
    Ok(())
}

/// An adjustment that changes nothing, for the unit tests of this module and the grant's.
#[cfg(test)]
pub(super) fn empty_adjustment() -> wit::Adjustment {
    wit::Adjustment {
        annotations: vec![],
        remove_annotations: vec![],
        labels: vec![],
        remove_labels: vec![],
        env: vec![],
        remove_env: vec![],
        mounts: vec![],
        remove_mounts: vec![],
        devices: vec![],
        remove_devices: vec![],
        resources: None,
        args: None,
        image: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adj() -> wit::Adjustment {
        empty_adjustment()
    }

    #[test]
    fn two_hooks_setting_one_field_conflict_by_name() {
        let mut m = Merged::default();
        let mut a = adj();
        a.env = vec![("NODE".into(), "n1".into())];
        m.add("inject", a).unwrap();
        let mut b = adj();
        b.remove_env = vec!["NODE".into()];
        let err = m.add("scrub", b).unwrap_err();
        assert!(
            err.contains("inject") && err.contains("scrub") && err.contains("NODE"),
            "{err}"
        );
        let mut c = adj();
        c.image = Some("mirror/busybox".into());
        m.add("mirror", c.clone()).unwrap();
        assert!(m.add("other", c).unwrap_err().contains("image"));
    }

    #[test]
    fn adjustments_land_on_the_container_config() {
        let mut cfg = pb::ContainerConfig {
            image: Some(pb::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            envs: vec![pb::KeyValue {
                key: "OLD".into(),
                value: b"1".to_vec(),
            }],
            ..Default::default()
        };
        let mut m = Merged::default();
        let mut a = adj();
        a.env = vec![("NODE".into(), "n1".into())];
        a.remove_env = vec!["OLD".into()];
        a.annotations = vec![("wasmgate.io/node".into(), "n1".into())];
        a.image = Some("mirror.local/library/busybox:latest".into());
        m.add("inject", a).unwrap();
        m.apply_container(&mut cfg);
        validate_container(&cfg).unwrap();
        assert_eq!(cfg.envs.len(), 1);
        assert_eq!(cfg.envs[0].key, "NODE");
        assert_eq!(cfg.annotations["wasmgate.io/node"], "n1");
        assert_eq!(
            cfg.image.unwrap().image,
            "mirror.local/library/busybox:latest"
        );
    }

    #[test]
    fn the_view_carries_the_working_dir_of_the_config_only() {
        let cfg = pb::ContainerConfig {
            working_dir: "/srv/app".into(),
            ..Default::default()
        };
        assert_eq!(container_from_config(&cfg, "").working_dir, "/srv/app");
        assert_eq!(
            container_from_config(&pb::ContainerConfig::default(), "").working_dir,
            ""
        );
        // A listing has no working dir: empty means unknown here, as unset.
        assert_eq!(
            container_from_listing(&pb::Container::default()).working_dir,
            ""
        );
    }

    #[test]
    fn validation_refuses_what_a_runtime_cannot_take() {
        let mut cfg = pb::ContainerConfig::default();
        assert!(validate_container(&cfg).is_err());
        cfg.image = Some(pb::ImageSpec {
            image: "x".into(),
            ..Default::default()
        });
        cfg.envs.push(pb::KeyValue {
            key: "A=B".into(),
            value: vec![],
        });
        assert!(validate_container(&cfg).unwrap_err().contains("env"));
    }
}
