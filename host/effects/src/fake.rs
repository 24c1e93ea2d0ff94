//! A recording fake of [`NetworkEffects`] for the daemon's unit tests.
//!
//! Like youki's `syscall/test.rs`, it touches nothing: it records each call and keeps a model of
//! which attachments exist, so that remove is idempotent, verify fails for what is absent, and
//! apply refuses names that are taken, as the kernel-backed [`crate::Netlink`] does.

use std::sync::Mutex;

use wasmgate_cni::plan::{Attachment, Target};

use crate::{Applied, EffectError, NetworkEffects};

/// One call made on the fake, with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Apply(Target, Attachment),
    Remove(Target, Attachment, Option<Applied>),
    Detach(Target, Attachment, Option<Applied>),
    Verify(Target, Attachment),
}

/// Records calls and models the attachments that exist. See the module docs.
#[derive(Debug, Default)]
pub struct RecordingFake {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<Call>,
    present: Vec<(Target, Attachment, Applied)>,
    fail_next_apply: Option<String>,
    applied: u32,
}

impl RecordingFake {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The attachments that exist now (applied and not removed).
    pub fn present(&self) -> Vec<(Target, Attachment)> {
        let state = self.lock();
        state
            .present
            .iter()
            .map(|(t, p, _)| (t.clone(), p.clone()))
            .collect()
    }

    /// Makes the next `apply` fail with [`EffectError::Netlink`] carrying `msg`, building nothing.
    pub fn fail_next_apply(&self, msg: impl Into<String>) {
        self.lock().fail_next_apply = Some(msg.into());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panicking test thread must not hide the record from the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl NetworkEffects for RecordingFake {
    fn apply(&self, target: &Target, plan: &Attachment) -> Result<Applied, EffectError> {
        let mut state = self.lock();
        state.calls.push(Call::Apply(target.clone(), plan.clone()));
        if let Some(msg) = state.fail_next_apply.take() {
            return Err(EffectError::Netlink(msg));
        }
        for (t, p, _) in &state.present {
            if p.veth.host_name == plan.veth.host_name {
                return Err(EffectError::HostInterfaceExists(
                    plan.veth.host_name.clone(),
                ));
            }
            if t == target {
                return Err(EffectError::ContainerInterfaceExists(target.ifname.clone()));
            }
        }
        state.applied += 1;
        let n = state.applied.to_be_bytes();
        let applied = Applied {
            host_mac: format!("02:00:{:02x}:{:02x}:{:02x}:{:02x}", n[0], n[1], n[2], n[3]),
            container_mac: format!("06:00:{:02x}:{:02x}:{:02x}:{:02x}", n[0], n[1], n[2], n[3]),
            host_ifindex: 2 * state.applied,
            container_ifindex: 2 * state.applied + 1,
        };
        state
            .present
            .push((target.clone(), plan.clone(), applied.clone()));
        Ok(applied)
    }

    fn remove(
        &self,
        target: &Target,
        plan: &Attachment,
        built: Option<&Applied>,
    ) -> Result<(), EffectError> {
        let mut state = self.lock();
        state
            .calls
            .push(Call::Remove(target.clone(), plan.clone(), built.cloned()));
        // As with the kernel: the host veth goes, and its peer with it, only if it is the one
        // recorded (or, with no record, by name); the container netns is never looked into.
        state.present.retain(|(_, p, a)| {
            p.veth.host_name != plan.veth.host_name || built.is_some_and(|b| b != a)
        });
        Ok(())
    }

    fn detach(
        &self,
        target: &Target,
        plan: &Attachment,
        built: Option<&Applied>,
    ) -> Result<(), EffectError> {
        let mut state = self.lock();
        state
            .calls
            .push(Call::Detach(target.clone(), plan.clone(), built.cloned()));
        // Down, not gone: the model keeps it present until `remove`.
        Ok(())
    }

    fn verify(&self, target: &Target, plan: &Attachment) -> Result<(), EffectError> {
        let mut state = self.lock();
        state.calls.push(Call::Verify(target.clone(), plan.clone()));
        if state
            .present
            .iter()
            .any(|(t, p, _)| t == target && p == plan)
        {
            Ok(())
        } else {
            Err(EffectError::Missing(format!(
                "interface {:?} not found in netns {:?}",
                target.ifname, target.netns
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmgate_cni::plan::Veth;

    fn target(ns: &str) -> Target {
        Target {
            netns: format!("/var/run/netns/{ns}"),
            ifname: "eth0".into(),
        }
    }

    fn plan(host: &str) -> Attachment {
        Attachment {
            veth: Veth {
                host_name: host.into(),
                mtu: None,
                host_addresses: vec![],
            },
            bridge: None,
            container_addresses: vec!["10.0.0.2/24".into()],
            container_routes: vec![],
            host_routes: vec![],
        }
    }

    #[test]
    fn records_calls_in_order() {
        let fake = RecordingFake::new();
        let (t, p) = (target("a"), plan("wga"));
        let built = fake.apply(&t, &p).unwrap();
        fake.verify(&t, &p).unwrap();
        fake.remove(&t, &p, Some(&built)).unwrap();
        assert_eq!(
            fake.calls(),
            vec![
                Call::Apply(t.clone(), p.clone()),
                Call::Verify(t.clone(), p.clone()),
                Call::Remove(t, p, Some(built)),
            ]
        );
    }

    #[test]
    fn remove_is_idempotent_and_verify_sees_absence() {
        let fake = RecordingFake::new();
        let (t, p) = (target("a"), plan("wga"));
        let applied = fake.apply(&t, &p).unwrap();
        assert_ne!(applied.host_mac, applied.container_mac);
        fake.remove(&t, &p, Some(&applied)).unwrap();
        fake.remove(&t, &p, Some(&applied)).unwrap();
        let err = fake.verify(&t, &p).unwrap_err();
        assert!(matches!(err, EffectError::Missing(_)), "{err}");
        assert!(err.to_string().contains("\"eth0\""), "{err}");
        assert!(fake.present().is_empty());

        // Removing with an unknown netns, or without a record of what was built, still
        // removes by host veth name.
        fake.apply(&t, &p).unwrap();
        let unknown = Target {
            netns: String::new(),
            ifname: "eth0".into(),
        };
        fake.remove(&unknown, &p, None).unwrap();
        assert!(fake.present().is_empty());
    }

    #[test]
    fn remove_leaves_a_veth_it_did_not_record() {
        let fake = RecordingFake::new();
        let (t, p) = (target("a"), plan("wga"));
        let first = fake.apply(&t, &p).unwrap();
        fake.remove(&t, &p, Some(&first)).unwrap();
        // The same names built again by someone else: not the veth the record names.
        fake.apply(&t, &p).unwrap();
        fake.remove(&t, &p, Some(&first)).unwrap();
        assert_eq!(fake.present(), vec![(t, p)]);
    }

    #[test]
    fn apply_refuses_taken_names() {
        let fake = RecordingFake::new();
        fake.apply(&target("a"), &plan("wga")).unwrap();
        assert!(matches!(
            fake.apply(&target("b"), &plan("wga")),
            Err(EffectError::HostInterfaceExists(n)) if n == "wga"
        ));
        assert!(matches!(
            fake.apply(&target("a"), &plan("wgb")),
            Err(EffectError::ContainerInterfaceExists(n)) if n == "eth0"
        ));
        assert_eq!(fake.present().len(), 1);
    }

    #[test]
    fn injected_failure_hits_only_the_next_apply() {
        let fake = RecordingFake::new();
        fake.fail_next_apply("boom");
        let err = fake.apply(&target("a"), &plan("wga")).unwrap_err();
        assert_eq!(err.to_string(), "netlink: boom");
        assert!(fake.present().is_empty());
        fake.apply(&target("a"), &plan("wga")).unwrap();
        assert_eq!(fake.calls().len(), 2);
    }
}
