//! Test fixture for the CRI proxy's hook chain: a runtime hook whose pre-hook misbehaves as the
//! `wasi:config` key `mode` says. `trap` panics, `loop` spins forever, `oom` allocates without
//! bound, `sleep` blocks in a host call for 30 s, `deny-all` denies every call, anything else allows. `events` (names separated by commas
//! or spaces, as in `wit/runtime.wit`: `create-container`, `start-container`…) limits what it
//! subscribes to; unset or empty means every event. The post-hook always returns at once.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "wasmgate:plugin/runtime-hook@0.1.0",
    generate_all,
});

use exports::wasmgate::plugin::hook::Guest;
use wasmgate::plugin::cri_types::{Decision, Event, Outcome, Request};

struct Hook;

const ALL: [(&str, Event); 9] = [
    ("run-pod", Event::RunPod),
    ("stop-pod", Event::StopPod),
    ("remove-pod", Event::RemovePod),
    ("create-container", Event::CreateContainer),
    ("start-container", Event::StartContainer),
    ("update-container", Event::UpdateContainer),
    ("stop-container", Event::StopContainer),
    ("remove-container", Event::RemoveContainer),
    ("pull-image", Event::PullImage),
];

fn key(name: &str) -> String {
    wasi::config::store::get(name)
        .ok()
        .flatten()
        .unwrap_or_default()
}

impl Guest for Hook {
    fn subscriptions() -> Vec<Event> {
        let wanted = key("events");
        let names: Vec<&str> = wanted
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .collect();
        ALL.iter()
            .filter(|(n, _)| names.is_empty() || names.contains(n))
            .map(|(_, e)| *e)
            .collect()
    }

    fn pre(_req: Request) -> Decision {
        match key("mode").as_str() {
            "trap" => panic!("hook-misbehave asked to trap"),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            // Blocks in a host call (a clock poll), where no epoch reaches it.
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(30));
                Decision::Allow
            }
            "deny-all" => Decision::Deny("hook-misbehave denies everything".to_string()),
            _ => Decision::Allow,
        }
    }

    fn post(_req: Request, _outcome: Outcome) {}
}

export!(Hook);
