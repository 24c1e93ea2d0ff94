//! Teardowns running behind an answered DEL, so an ADD that would collide with one (same host
//! veth, or same pod netns) waits for the kernel to finish instead of failing.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::Notify;

#[derive(Default)]
pub struct Teardowns {
    /// host veth name -> pod netns path.
    running: Mutex<HashMap<String, String>>,
    done: Notify,
}

impl Teardowns {
    pub fn start(&self, host_name: &str, netns: &str) {
        self.lock().insert(host_name.to_string(), netns.to_string());
    }

    pub fn finish(&self, host_name: &str) {
        self.lock().remove(host_name);
        self.done.notify_waiters();
    }

    /// Returns once no teardown touches `host_name` or `netns`.
    pub async fn wait_clear(&self, host_name: &str, netns: &str) {
        loop {
            // Register before looking, so a finish between the look and the wait is not missed.
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let busy = self
                .lock()
                .iter()
                .any(|(h, n)| h == host_name || (!netns.is_empty() && n == netns));
            if !busy {
                return;
            }
            notified.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::Teardowns;

    #[tokio::test]
    async fn waits_only_for_colliding_teardowns() {
        let t = Arc::new(Teardowns::default());
        t.start("wg1", "/var/run/netns/a");
        // Unrelated names pass straight through.
        tokio::time::timeout(
            Duration::from_secs(1),
            t.wait_clear("wg2", "/var/run/netns/b"),
        )
        .await
        .unwrap();
        let waiter = {
            let t = t.clone();
            tokio::spawn(async move { t.wait_clear("wg9", "/var/run/netns/a").await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "same netns must wait");
        t.finish("wg1");
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
