//! A CRI runtime hook of any WIT version this host serves, called with the newest types.
//!
//! In the flow of a CRI call this sits between the daemon's hook chain and the generated
//! bindings: the chain builds one request in the newest vocabulary ([`cri_types`]) and calls
//! every hook through [`Hook`], whatever version the hook was built against. For an older hook
//! the request and outcome are converted down and its answers up, here and nowhere else. A
//! plugin keeps its version: nothing asks a hook author to rebuild when a version is added.
//!
//! Down is lossy by design: 0.1.0 has no `working-dir`, so a 0.1.0 hook does not see it. Up is
//! exact: every 0.1.0 event and decision has the same shape in 0.2.0.

use wasmtime::Store;
use wasmtime::component::InstancePre;

use crate::bindings::{
    RUNTIME_WORLD, RUNTIME_WORLD_V0_2, RUNTIME_WORLD_V0_3, cri_types, v0_1, v0_2, v0_3,
};
use crate::host::HostState;

use cri_types::{Decision, Event, Outcome, Request};

/// The type-checked entry points of a runtime hook, in the version it exports.
#[derive(Clone)]
pub(crate) enum HookPre {
    V0_1(v0_1::RuntimeHookPre<HostState>),
    V0_2(v0_2::RuntimeHookPre<HostState>),
    V0_3(v0_3::RuntimeHookPre<HostState>),
}

impl HookPre {
    /// Looks up the hook's exports for the version the component was judged to fit.
    pub(crate) fn new(pre: InstancePre<HostState>, world: &str) -> wasmtime::Result<Self> {
        Ok(match world {
            RUNTIME_WORLD_V0_3 => HookPre::V0_3(v0_3::RuntimeHookPre::new(pre)?),
            RUNTIME_WORLD_V0_2 => HookPre::V0_2(v0_2::RuntimeHookPre::new(pre)?),
            _ => HookPre::V0_1(v0_1::RuntimeHookPre::new(pre)?),
        })
    }

    pub(crate) async fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Hook> {
        Ok(match self {
            HookPre::V0_1(p) => Hook::V0_1(p.instantiate_async(store).await?),
            HookPre::V0_2(p) => Hook::V0_2(p.instantiate_async(store).await?),
            HookPre::V0_3(p) => Hook::V0_3(p.instantiate_async(store).await?),
        })
    }

    /// The world, with its version, this hook was built against.
    pub(crate) fn world(&self) -> &'static str {
        match self {
            HookPre::V0_1(_) => RUNTIME_WORLD,
            HookPre::V0_2(_) => RUNTIME_WORLD_V0_2,
            HookPre::V0_3(_) => RUNTIME_WORLD_V0_3,
        }
    }
}

/// One instance of a runtime hook, of whichever version; its calls take and give the newest
/// types.
pub enum Hook {
    V0_1(v0_1::RuntimeHook),
    V0_2(v0_2::RuntimeHook),
    V0_3(v0_3::RuntimeHook),
}

impl Hook {
    /// The world, with its version, this hook was built against.
    pub fn world(&self) -> &'static str {
        match self {
            Hook::V0_1(_) => RUNTIME_WORLD,
            Hook::V0_2(_) => RUNTIME_WORLD_V0_2,
            Hook::V0_3(_) => RUNTIME_WORLD_V0_3,
        }
    }

    pub async fn call_subscriptions(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Vec<Event>> {
        Ok(match self {
            Hook::V0_1(h) => h
                .wasmgate_plugin_hook()
                .call_subscriptions(store)
                .await?
                .into_iter()
                .map(up::event)
                .collect(),
            Hook::V0_2(h) => h.wasmgate_plugin_hook().call_subscriptions(store).await?,
            Hook::V0_3(h) => h.wasmgate_plugin_hook().call_subscriptions(store).await?,
        })
    }

    /// The events whose outcome the hook wants in `post`: before 0.3.0, every event it
    /// subscribes to.
    pub async fn call_post_subscriptions(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Vec<Event>> {
        match self {
            Hook::V0_3(h) => {
                h.wasmgate_plugin_hook()
                    .call_post_subscriptions(store)
                    .await
            }
            Hook::V0_1(_) | Hook::V0_2(_) => self.call_subscriptions(store).await,
        }
    }

    pub async fn call_pre(
        &self,
        store: &mut Store<HostState>,
        req: &Request,
    ) -> wasmtime::Result<Decision> {
        Ok(match self {
            Hook::V0_1(h) => up::decision(
                h.wasmgate_plugin_hook()
                    .call_pre(store, &down::request(req))
                    .await?,
            ),
            Hook::V0_2(h) => h.wasmgate_plugin_hook().call_pre(store, req).await?,
            Hook::V0_3(h) => h.wasmgate_plugin_hook().call_pre(store, req).await?,
        })
    }

    pub async fn call_post(
        &self,
        store: &mut Store<HostState>,
        req: &Request,
        outcome: &Outcome,
    ) -> wasmtime::Result<()> {
        match self {
            Hook::V0_1(h) => {
                h.wasmgate_plugin_hook()
                    .call_post(store, &down::request(req), &down::outcome(outcome))
                    .await
            }
            Hook::V0_2(h) => {
                h.wasmgate_plugin_hook()
                    .call_post(store, req, outcome)
                    .await
            }
            Hook::V0_3(h) => {
                h.wasmgate_plugin_hook()
                    .call_post(store, req, outcome)
                    .await
            }
        }
    }
}

/// 0.2.0 → 0.1.0: what the host sends a 0.1.0 hook.
pub mod down {
    use crate::bindings::v0_1::cri_types as old;
    use crate::bindings::v0_2::cri_types as new;

    pub fn request(r: &new::Request) -> old::Request {
        match r {
            new::Request::RunPod(p) => old::Request::RunPod(pod(p)),
            new::Request::StopPod(p) => old::Request::StopPod(pod(p)),
            new::Request::RemovePod(p) => old::Request::RemovePod(pod(p)),
            new::Request::CreateContainer(pc) => old::Request::CreateContainer(pair(pc)),
            new::Request::StartContainer(pc) => old::Request::StartContainer(pair(pc)),
            new::Request::UpdateContainer(pc) => old::Request::UpdateContainer(pair(pc)),
            new::Request::StopContainer(pc) => old::Request::StopContainer(pair(pc)),
            new::Request::RemoveContainer(pc) => old::Request::RemoveContainer(pair(pc)),
            new::Request::PullImage(i) => old::Request::PullImage(old::ImageRequest {
                image: i.image.clone(),
                annotations: i.annotations.clone(),
                pod: i.pod.as_ref().map(pod),
            }),
        }
    }

    pub fn outcome(o: &new::Outcome) -> old::Outcome {
        match o {
            new::Outcome::Ok(id) => old::Outcome::Ok(id.clone()),
            new::Outcome::Failed((code, msg)) => old::Outcome::Failed((*code, msg.clone())),
        }
    }

    fn pair((p, c): &(new::Pod, new::Container)) -> (old::Pod, old::Container) {
        (pod(p), container(c))
    }

    fn pod(p: &new::Pod) -> old::Pod {
        old::Pod {
            id: p.id.clone(),
            name: p.name.clone(),
            namespace: p.namespace.clone(),
            uid: p.uid.clone(),
            labels: p.labels.clone(),
            annotations: p.annotations.clone(),
            runtime_handler: p.runtime_handler.clone(),
        }
    }

    /// Everything but `working-dir`, which 0.1.0 does not have.
    fn container(c: &new::Container) -> old::Container {
        old::Container {
            id: c.id.clone(),
            name: c.name.clone(),
            image: c.image.clone(),
            command: c.command.clone(),
            args: c.args.clone(),
            env: c.env.clone(),
            mounts: c
                .mounts
                .iter()
                .map(|m| old::Mount {
                    container_path: m.container_path.clone(),
                    host_path: m.host_path.clone(),
                    readonly: m.readonly,
                })
                .collect(),
            devices: c
                .devices
                .iter()
                .map(|d| old::Device {
                    container_path: d.container_path.clone(),
                    host_path: d.host_path.clone(),
                    permissions: d.permissions.clone(),
                })
                .collect(),
            resources: c.resources.as_ref().map(|r| old::Resources {
                cpu_period: r.cpu_period,
                cpu_quota: r.cpu_quota,
                cpu_shares: r.cpu_shares,
                memory_limit_bytes: r.memory_limit_bytes,
                cpuset_cpus: r.cpuset_cpus.clone(),
                cpuset_mems: r.cpuset_mems.clone(),
            }),
            security: old::Security {
                privileged: c.security.privileged,
                run_as_user: c.security.run_as_user,
                add_capabilities: c.security.add_capabilities.clone(),
                drop_capabilities: c.security.drop_capabilities.clone(),
                readonly_rootfs: c.security.readonly_rootfs,
            },
            labels: c.labels.clone(),
            annotations: c.annotations.clone(),
        }
    }
}

/// 0.1.0 → 0.2.0: what a 0.1.0 hook answers, in the daemon's types. Same shapes, nothing lost.
pub mod up {
    use crate::bindings::v0_1::cri_types as old;
    use crate::bindings::v0_2::cri_types as new;

    pub fn event(e: old::Event) -> new::Event {
        match e {
            old::Event::RunPod => new::Event::RunPod,
            old::Event::StopPod => new::Event::StopPod,
            old::Event::RemovePod => new::Event::RemovePod,
            old::Event::CreateContainer => new::Event::CreateContainer,
            old::Event::StartContainer => new::Event::StartContainer,
            old::Event::UpdateContainer => new::Event::UpdateContainer,
            old::Event::StopContainer => new::Event::StopContainer,
            old::Event::RemoveContainer => new::Event::RemoveContainer,
            old::Event::PullImage => new::Event::PullImage,
        }
    }

    pub fn decision(d: old::Decision) -> new::Decision {
        match d {
            old::Decision::Allow => new::Decision::Allow,
            old::Decision::Deny(reason) => new::Decision::Deny(reason),
            old::Decision::Adjust(a) => new::Decision::Adjust(adjustment(a)),
        }
    }

    fn adjustment(a: old::Adjustment) -> new::Adjustment {
        new::Adjustment {
            annotations: a.annotations,
            remove_annotations: a.remove_annotations,
            labels: a.labels,
            remove_labels: a.remove_labels,
            env: a.env,
            remove_env: a.remove_env,
            mounts: a
                .mounts
                .into_iter()
                .map(|m| new::Mount {
                    container_path: m.container_path,
                    host_path: m.host_path,
                    readonly: m.readonly,
                })
                .collect(),
            remove_mounts: a.remove_mounts,
            devices: a
                .devices
                .into_iter()
                .map(|d| new::Device {
                    container_path: d.container_path,
                    host_path: d.host_path,
                    permissions: d.permissions,
                })
                .collect(),
            remove_devices: a.remove_devices,
            resources: a.resources.map(|r| new::Resources {
                cpu_period: r.cpu_period,
                cpu_quota: r.cpu_quota,
                cpu_shares: r.cpu_shares,
                memory_limit_bytes: r.memory_limit_bytes,
                cpuset_cpus: r.cpuset_cpus,
                cpuset_mems: r.cpuset_mems,
            }),
            args: a.args,
            image: a.image,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{down, up};
    use crate::bindings::v0_1::cri_types as old;
    use crate::bindings::v0_2::cri_types as new;

    fn pod() -> new::Pod {
        new::Pod {
            id: "sb1".into(),
            name: "web".into(),
            namespace: "default".into(),
            uid: "u1".into(),
            labels: vec![("app".into(), "web".into())],
            annotations: vec![("a".into(), "1".into())],
            runtime_handler: "runc".into(),
        }
    }

    fn container() -> new::Container {
        new::Container {
            id: "c1".into(),
            name: "nginx".into(),
            image: "nginx:1.27".into(),
            command: vec!["/bin/sh".into()],
            args: vec!["-c".into(), "true".into()],
            env: vec![("PATH".into(), "/bin".into())],
            mounts: vec![new::Mount {
                container_path: "/data".into(),
                host_path: "/var/data".into(),
                readonly: true,
            }],
            devices: vec![new::Device {
                container_path: "/dev/fuse".into(),
                host_path: "/dev/fuse".into(),
                permissions: "rwm".into(),
            }],
            resources: Some(new::Resources {
                cpu_period: 100_000,
                cpu_quota: 50_000,
                cpu_shares: 512,
                memory_limit_bytes: 1 << 28,
                cpuset_cpus: "0-1".into(),
                cpuset_mems: "0".into(),
            }),
            security: new::Security {
                privileged: true,
                run_as_user: Some(1000),
                add_capabilities: vec!["NET_ADMIN".into()],
                drop_capabilities: vec!["ALL".into()],
                readonly_rootfs: true,
            },
            labels: vec![("l".into(), "v".into())],
            annotations: vec![("k".into(), "v".into())],
            working_dir: "/srv/app".into(),
        }
    }

    #[test]
    fn a_container_goes_down_whole_but_its_working_dir() {
        let req = new::Request::CreateContainer((pod(), container()));
        let old::Request::CreateContainer((p, c)) = down::request(&req) else {
            panic!("the variant changed on the way down");
        };
        let n = container();
        assert_eq!(
            (
                p.id,
                p.name,
                p.namespace,
                p.uid,
                p.labels,
                p.annotations,
                p.runtime_handler
            ),
            (
                "sb1".into(),
                "web".into(),
                "default".into(),
                "u1".into(),
                pod().labels,
                pod().annotations,
                "runc".into()
            )
        );
        assert_eq!((c.id, c.name, c.image), (n.id, n.name, n.image));
        assert_eq!((c.command, c.args, c.env), (n.command, n.args, n.env));
        assert_eq!((c.labels, c.annotations), (n.labels, n.annotations));
        let (m, d) = (&c.mounts[0], &c.devices[0]);
        assert_eq!(
            (m.container_path.as_str(), m.host_path.as_str(), m.readonly),
            ("/data", "/var/data", true)
        );
        assert_eq!(
            (d.container_path.as_str(), d.permissions.as_str()),
            ("/dev/fuse", "rwm")
        );
        let r = c.resources.expect("resources kept");
        assert_eq!(
            (
                r.cpu_period,
                r.cpu_quota,
                r.cpu_shares,
                r.memory_limit_bytes,
                r.cpuset_cpus,
                r.cpuset_mems
            ),
            (100_000, 50_000, 512, 1 << 28, "0-1".into(), "0".into())
        );
        let s = c.security;
        assert!(s.privileged && s.readonly_rootfs);
        assert_eq!(s.run_as_user, Some(1000));
        assert_eq!(
            (s.add_capabilities, s.drop_capabilities),
            (vec!["NET_ADMIN".into()], vec!["ALL".into()])
        );
    }

    #[test]
    fn every_request_keeps_its_variant_on_the_way_down() {
        let pc = || (pod(), container());
        let cases = [
            (new::Request::RunPod(pod()), "RunPod"),
            (new::Request::StopPod(pod()), "StopPod"),
            (new::Request::RemovePod(pod()), "RemovePod"),
            (new::Request::CreateContainer(pc()), "CreateContainer"),
            (new::Request::StartContainer(pc()), "StartContainer"),
            (new::Request::UpdateContainer(pc()), "UpdateContainer"),
            (new::Request::StopContainer(pc()), "StopContainer"),
            (new::Request::RemoveContainer(pc()), "RemoveContainer"),
            (
                new::Request::PullImage(new::ImageRequest {
                    image: "busybox".into(),
                    annotations: vec![],
                    pod: Some(pod()),
                }),
                "PullImage",
            ),
        ];
        for (req, name) in cases {
            let down = format!("{:?}", down::request(&req));
            assert!(
                down.starts_with(&format!("Request::{name}(")),
                "{name}: {down}"
            );
            assert!(!down.contains("working-dir"), "{down}");
        }
        let o = down::outcome(&new::Outcome::Failed((7, "denied".into())));
        assert!(matches!(o, old::Outcome::Failed((7, ref m)) if m == "denied"));
        let o = down::outcome(&new::Outcome::Ok("c1".into()));
        assert!(matches!(o, old::Outcome::Ok(ref id) if id == "c1"));
    }

    #[test]
    fn a_decision_comes_up_unchanged() {
        let a = old::Adjustment {
            annotations: vec![("wasmgate.io/node".into(), "n1".into())],
            remove_annotations: vec!["x".into()],
            labels: vec![("l".into(), "1".into())],
            remove_labels: vec!["y".into()],
            env: vec![("NODE".into(), "n1".into())],
            remove_env: vec!["OLD".into()],
            mounts: vec![old::Mount {
                container_path: "/m".into(),
                host_path: "/h".into(),
                readonly: false,
            }],
            remove_mounts: vec!["/gone".into()],
            devices: vec![old::Device {
                container_path: "/dev/d".into(),
                host_path: "/dev/d".into(),
                permissions: "r".into(),
            }],
            remove_devices: vec!["/dev/x".into()],
            resources: Some(old::Resources {
                cpu_period: 1,
                cpu_quota: 2,
                cpu_shares: 3,
                memory_limit_bytes: 4,
                cpuset_cpus: "5".into(),
                cpuset_mems: "6".into(),
            }),
            args: Some(vec!["a".into()]),
            image: Some("mirror/busybox".into()),
        };
        let before = format!("{:?}", old::Decision::Adjust(a.clone()));
        let up = up::decision(old::Decision::Adjust(a));
        // Same shapes, so the same debug text, field for field.
        assert_eq!(format!("{up:?}"), before);
        assert!(matches!(
            up::decision(old::Decision::Allow),
            new::Decision::Allow
        ));
        assert!(
            matches!(up::decision(old::Decision::Deny("no".into())), new::Decision::Deny(r) if r == "no")
        );
        assert!(matches!(
            up::event(old::Event::PullImage),
            new::Event::PullImage
        ));
        assert!(matches!(
            up::event(old::Event::CreateContainer),
            new::Event::CreateContainer
        ));
    }
}
