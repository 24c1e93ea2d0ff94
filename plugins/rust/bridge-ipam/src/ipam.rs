//! Address allocation in `wasi:keyvalue`, race-free with nothing but `atomics.increment`.
//!
//! Calls run in separate instances, many at once on one store, so no in-memory lock exists
//! and `get`-then-`set` would race. An address belongs to whoever moves its claim counter from 0
//! to 1. Keys, all under the network name so that networks never collide:
//!
//! | key | value |
//! | --- | --- |
//! | `<net>/cursor` | counter: where the next ADD starts walking the pool |
//! | `<net>/claim/<ip>` | counter: 1 for the owner, more after losing racers bumped it |
//! | `<net>/owner/<ip>` | `<container-id>/<ifname>` |
//! | `<net>/alloc/<container-id>/<ifname>` | `<ip>` |

// BTreeSet, not HashSet: HashSet's random seed would make std import wasi:random.
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::error::{ADDRESS_IN_USE, INVALID_CONFIG, IO_FAILURE, POOL_EXHAUSTED, err};
use crate::pool::Pool;
use crate::wasmgate::plugin::cni_types::CniError;

/// The `wasi:keyvalue` bucket, behind a trait so that tests can use a map.
pub trait Kv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String>;
    fn set(&self, key: &str, value: &[u8]) -> Result<(), String>;
    fn delete(&self, key: &str) -> Result<(), String>;
    /// One page of keys and the cursor of the next page, none on the last.
    fn list_keys(&self, cursor: Option<u64>) -> Result<(Vec<String>, Option<u64>), String>;
    /// Adds `delta` (a missing key counts as 0) and returns the new value, atomically.
    fn increment(&self, key: &str, delta: u64) -> Result<u64, String>;
}

/// A bound on `list-keys` paging, so that a store whose cursor never ends cannot spin us forever.
const MAX_PAGES: usize = 100_000;

/// The allocations of one network.
pub struct Ipam<'a, K: Kv> {
    kv: &'a K,
    net: &'a str,
}

fn io(op: &str, key: &str, e: String) -> CniError {
    err(IO_FAILURE, format!("keyvalue {op} {key}: {e}"))
}

impl<'a, K: Kv> Ipam<'a, K> {
    /// `net` must not contain `/` (the caller checks), or one network's keys could alias another's.
    pub fn new(kv: &'a K, net: &'a str) -> Self {
        Ipam { kv, net }
    }

    fn alloc_key(&self, cid: &str, ifname: &str) -> String {
        format!("{}/alloc/{cid}/{ifname}", self.net)
    }

    fn owner_key(&self, ip: Ipv4Addr) -> String {
        format!("{}/owner/{ip}", self.net)
    }

    fn claim_key(&self, ip: Ipv4Addr) -> String {
        format!("{}/claim/{ip}", self.net)
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CniError> {
        self.kv.get(key).map_err(|e| io("get", key, e))
    }

    fn set(&self, key: &str, value: &str) -> Result<(), CniError> {
        self.kv
            .set(key, value.as_bytes())
            .map_err(|e| io("set", key, e))
    }

    fn delete(&self, key: &str) -> Result<(), CniError> {
        self.kv.delete(key).map_err(|e| io("delete", key, e))
    }

    fn increment(&self, key: &str) -> Result<u64, CniError> {
        self.kv
            .increment(key, 1)
            .map_err(|e| io("increment", key, e))
    }

    /// Whether the attachment has an allocation record at all, readable or not.
    pub fn exists(&self, cid: &str, ifname: &str) -> Result<bool, CniError> {
        Ok(self.get(&self.alloc_key(cid, ifname))?.is_some())
    }

    /// The attachment's address; an unreadable record is an I/O failure.
    pub fn lookup(&self, cid: &str, ifname: &str) -> Result<Option<Ipv4Addr>, CniError> {
        let key = self.alloc_key(cid, ifname);
        match self.get(&key)? {
            None => Ok(None),
            Some(raw) => parse_ip(&raw)
                .map(Some)
                .ok_or_else(|| err(IO_FAILURE, format!("keyvalue {key} holds no IPv4 address"))),
        }
    }

    /// Claims a free address for the attachment. The caller has checked that it has none yet.
    pub fn allocate(&self, pool: &Pool, cid: &str, ifname: &str) -> Result<Ipv4Addr, CniError> {
        let size = pool.size();
        // Concurrent ADDs get different cursors, so they mostly start on different addresses;
        // a released address is reused only after the cursor comes round again, as host-local.
        let start = self.increment(&format!("{}/cursor", self.net))?;
        let first = start.wrapping_sub(1) % size;
        for step in 0..size {
            let ip = pool.nth((first + step) % size);
            if self.claim(ip, cid, ifname)? {
                return Ok(ip);
            }
        }
        Err(err(
            POOL_EXHAUSTED,
            format!("no addresses available in {}", pool.cidr()),
        ))
    }

    /// Claims exactly `ip`, as asked for through the `ips` capability or `IP=` in CNI_ARGS.
    pub fn allocate_exact(
        &self,
        pool: &Pool,
        ip: Ipv4Addr,
        cid: &str,
        ifname: &str,
    ) -> Result<Ipv4Addr, CniError> {
        if !pool.is_assignable(ip) {
            return Err(err(
                INVALID_CONFIG,
                format!(
                    "requested address {ip} is not assignable in {}",
                    pool.cidr()
                ),
            ));
        }
        if self.claim(ip, cid, ifname)? {
            Ok(ip)
        } else {
            Err(err(
                ADDRESS_IN_USE,
                format!("requested address {ip} is already in use"),
            ))
        }
    }

    /// Takes `ip` for the attachment if nobody holds it; false when someone does.
    fn claim(&self, ip: Ipv4Addr, cid: &str, ifname: &str) -> Result<bool, CniError> {
        let claim = self.claim_key(ip);
        if self.increment(&claim)? != 1 {
            return Ok(false);
        }
        if let Err(e) = self.record(ip, cid, ifname) {
            // Undo in DEL's order so the address is not left half-owned; best effort, the first
            // error is the one to report.
            let _ = self.delete(&self.owner_key(ip));
            let _ = self.delete(&self.alloc_key(cid, ifname));
            let _ = self.delete(&claim);
            return Err(e);
        }
        Ok(true)
    }

    fn record(&self, ip: Ipv4Addr, cid: &str, ifname: &str) -> Result<(), CniError> {
        self.set(&self.owner_key(ip), &format!("{cid}/{ifname}"))?;
        self.set(&self.alloc_key(cid, ifname), &ip.to_string())
    }

    /// Frees the attachment's address; `Ok(None)` when it had none. Idempotent.
    ///
    /// Order matters: the claim goes last, so the address cannot be claimed by someone else while
    /// our owner record still names it. A crash part-way leaves at worst the alloc record (the
    /// runtime retries DEL and finishes) or a lone claim (the address leaks; never given twice).
    pub fn release(&self, cid: &str, ifname: &str) -> Result<Option<Ipv4Addr>, CniError> {
        let alloc = self.alloc_key(cid, ifname);
        let Some(raw) = self.get(&alloc)? else {
            return Ok(None);
        };
        let Some(ip) = parse_ip(&raw) else {
            // Nothing to follow to; drop the unreadable record so DEL still succeeds.
            self.delete(&alloc)?;
            return Ok(None);
        };
        let owner = self.owner_key(ip);
        let ours = format!("{cid}/{ifname}");
        match self.get(&owner)? {
            // The address is someone else's (a stale record of ours): leave their keys alone.
            Some(who) if who != ours.as_bytes() => {
                self.delete(&alloc)?;
                return Ok(None);
            }
            Some(_) => self.delete(&owner)?,
            None => {}
        }
        self.delete(&alloc)?;
        self.delete(&self.claim_key(ip))?;
        Ok(Some(ip))
    }

    /// How many addresses are owned.
    pub fn in_use(&self) -> Result<u64, CniError> {
        let prefix = format!("{}/owner/", self.net);
        Ok(self.keys_with_prefix(&prefix)?.len() as u64)
    }

    /// Every (container-id, ifname) with an allocation record.
    pub fn attachments(&self) -> Result<Vec<(String, String)>, CniError> {
        let prefix = format!("{}/alloc/", self.net);
        Ok(self
            .keys_with_prefix(&prefix)?
            .into_iter()
            .filter_map(|key| {
                // Container IDs never contain '/', so the first one splits off the ifname.
                let (cid, ifname) = key[prefix.len()..].split_once('/')?;
                Some((cid.to_string(), ifname.to_string()))
            })
            .collect())
    }

    fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, CniError> {
        let mut found = Vec::new();
        let mut seen = BTreeSet::new();
        let mut cursor = None;
        for _ in 0..MAX_PAGES {
            let (keys, next) = self
                .kv
                .list_keys(cursor)
                .map_err(|e| io("list-keys", prefix, e))?;
            found.extend(
                keys.into_iter()
                    .filter(|k| k.starts_with(prefix) && seen.insert(k.clone())),
            );
            match next {
                None => return Ok(found),
                Some(c) if cursor == Some(c) => break,
                Some(c) => cursor = Some(c),
            }
        }
        Err(err(
            IO_FAILURE,
            format!("keyvalue list-keys {prefix}: the cursor never reached the end"),
        ))
    }
}

fn parse_ip(raw: &[u8]) -> Option<Ipv4Addr> {
    std::str::from_utf8(raw).ok()?.parse().ok()
}

#[cfg(test)]
pub mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;
    use crate::pool::parse_cidr;

    /// An in-memory bucket shared by threads like one store shared by instances. It serves
    /// `list-keys` in pages of `page` keys, like a real store with a cursor, and keeps counters as
    /// decimal text like wasmtime's in-memory provider.
    pub struct FakeKv {
        pub map: Mutex<BTreeMap<String, Vec<u8>>>,
        pub page: usize,
        /// Fail every operation on keys containing this.
        pub fail_on: Mutex<Option<String>>,
    }

    impl Default for FakeKv {
        fn default() -> Self {
            FakeKv {
                map: Mutex::default(),
                page: 3,
                fail_on: Mutex::default(),
            }
        }
    }

    impl FakeKv {
        fn check(&self, key: &str) -> Result<(), String> {
            match &*self.fail_on.lock().unwrap() {
                Some(bad) if key.contains(bad.as_str()) => Err("injected failure".into()),
                _ => Ok(()),
            }
        }

        pub fn value(&self, key: &str) -> Option<String> {
            self.map
                .lock()
                .unwrap()
                .get(key)
                .map(|v| String::from_utf8(v.clone()).unwrap())
        }

        pub fn keys(&self) -> Vec<String> {
            self.map.lock().unwrap().keys().cloned().collect()
        }
    }

    impl Kv for FakeKv {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
            self.check(key)?;
            Ok(self.map.lock().unwrap().get(key).cloned())
        }

        fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
            self.check(key)?;
            self.map.lock().unwrap().insert(key.into(), value.to_vec());
            Ok(())
        }

        fn delete(&self, key: &str) -> Result<(), String> {
            self.check(key)?;
            self.map.lock().unwrap().remove(key);
            Ok(())
        }

        fn list_keys(&self, cursor: Option<u64>) -> Result<(Vec<String>, Option<u64>), String> {
            let start = cursor.unwrap_or(0) as usize;
            let keys = self.keys();
            let page: Vec<String> = keys.iter().skip(start).take(self.page).cloned().collect();
            let next = (start + page.len() < keys.len()).then_some((start + page.len()) as u64);
            Ok((page, next))
        }

        fn increment(&self, key: &str, delta: u64) -> Result<u64, String> {
            self.check(key)?;
            let mut map = self.map.lock().unwrap();
            let current: u64 = match map.get(key) {
                None => 0,
                Some(v) => std::str::from_utf8(v)
                    .map_err(|e| e.to_string())?
                    .parse()
                    .map_err(|e: std::num::ParseIntError| e.to_string())?,
            };
            let new = current + delta;
            map.insert(key.into(), new.to_string().into_bytes());
            Ok(new)
        }
    }

    fn pool(cidr: &str) -> Pool {
        let (net, prefix) = parse_cidr(cidr).unwrap();
        Pool::new(net, prefix, None).unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn allocates_sequentially_and_records_state() {
        let kv = FakeKv::default();
        let ipam = Ipam::new(&kv, "n");
        let p = pool("10.240.0.0/24");
        assert_eq!(ipam.allocate(&p, "c1", "eth0").unwrap(), ip("10.240.0.2"));
        assert_eq!(ipam.allocate(&p, "c2", "eth0").unwrap(), ip("10.240.0.3"));
        assert_eq!(kv.value("n/owner/10.240.0.2").unwrap(), "c1/eth0");
        assert_eq!(kv.value("n/alloc/c2/eth0").unwrap(), "10.240.0.3");
        assert_eq!(kv.value("n/claim/10.240.0.3").unwrap(), "1");
        assert_eq!(ipam.lookup("c1", "eth0").unwrap(), Some(ip("10.240.0.2")));
        assert_eq!(ipam.in_use().unwrap(), 2);
    }

    #[test]
    fn skips_addresses_claimed_by_others() {
        let kv = FakeKv::default();
        // Another instance won 10.240.0.2 and has not written its owner key yet.
        kv.increment("n/claim/10.240.0.2", 1).unwrap();
        let ipam = Ipam::new(&kv, "n");
        assert_eq!(
            ipam.allocate(&pool("10.240.0.0/24"), "c1", "eth0").unwrap(),
            ip("10.240.0.3")
        );
        // Our losing attempt bumped it to 2, which does not make it ours or free.
        assert_eq!(kv.value("n/claim/10.240.0.2").unwrap(), "2");
    }

    #[test]
    fn exhaustion_is_code_110_and_names_the_cidr() {
        let kv = FakeKv::default();
        let ipam = Ipam::new(&kv, "n");
        let p = pool("10.0.0.0/29"); // 5 assignable
        let got: BTreeSet<_> = (0..5)
            .map(|i| ipam.allocate(&p, &format!("c{i}"), "eth0").unwrap())
            .collect();
        assert_eq!(got.len(), 5);
        let e = ipam.allocate(&p, "c9", "eth0").unwrap_err();
        assert_eq!(e.code, POOL_EXHAUSTED);
        assert_eq!(e.msg, "no addresses available in 10.0.0.0/29");
        assert_eq!(ipam.in_use().unwrap(), 5);
    }

    #[test]
    fn release_frees_the_address_for_reuse_and_is_idempotent() {
        let kv = FakeKv::default();
        let ipam = Ipam::new(&kv, "n");
        let p = pool("10.0.0.0/30"); // exactly one assignable address
        let a = ipam.allocate(&p, "c1", "eth0").unwrap();
        assert!(ipam.allocate(&p, "c2", "eth0").is_err());
        assert_eq!(ipam.release("c1", "eth0").unwrap(), Some(a));
        assert_eq!(ipam.release("c1", "eth0").unwrap(), None);
        assert!(kv.keys().iter().all(|k| k == "n/cursor"), "{:?}", kv.keys());
        assert_eq!(ipam.allocate(&p, "c2", "eth0").unwrap(), a);
    }

    #[test]
    fn networks_do_not_collide() {
        let kv = FakeKv::default();
        let p = pool("10.240.0.0/24");
        let a = Ipam::new(&kv, "a").allocate(&p, "c1", "eth0").unwrap();
        let b = Ipam::new(&kv, "b").allocate(&p, "c1", "eth0").unwrap();
        assert_eq!(a, b); // same pool, separate state
        assert_eq!(Ipam::new(&kv, "a").in_use().unwrap(), 1);
        Ipam::new(&kv, "a").release("c1", "eth0").unwrap();
        assert_eq!(Ipam::new(&kv, "b").lookup("c1", "eth0").unwrap(), Some(b));
        assert_eq!(Ipam::new(&kv, "b").in_use().unwrap(), 1);
    }

    #[test]
    fn release_leaves_someone_elses_address_alone() {
        let kv = FakeKv::default();
        let ipam = Ipam::new(&kv, "n");
        let p = pool("10.240.0.0/24");
        let a = ipam.allocate(&p, "c1", "eth0").unwrap();
        // A stale record of c9 pointing at c1's address.
        kv.set("n/alloc/c9/eth0", a.to_string().as_bytes()).unwrap();
        assert_eq!(ipam.release("c9", "eth0").unwrap(), None);
        assert_eq!(kv.value("n/owner/10.240.0.2").unwrap(), "c1/eth0");
        assert_eq!(kv.value("n/claim/10.240.0.2").unwrap(), "1");
        assert!(kv.value("n/alloc/c9/eth0").is_none());
    }

    #[test]
    fn unreadable_record_is_dropped_on_release() {
        let kv = FakeKv::default();
        kv.set("n/alloc/c1/eth0", b"garbage").unwrap();
        let ipam = Ipam::new(&kv, "n");
        assert_eq!(ipam.lookup("c1", "eth0").unwrap_err().code, IO_FAILURE);
        assert_eq!(ipam.release("c1", "eth0").unwrap(), None);
        assert!(kv.keys().is_empty());
    }

    #[test]
    fn failed_record_rolls_the_claim_back() {
        let kv = FakeKv::default();
        *kv.fail_on.lock().unwrap() = Some("/alloc/".into());
        let ipam = Ipam::new(&kv, "n");
        let e = ipam
            .allocate(&pool("10.240.0.0/24"), "c1", "eth0")
            .unwrap_err();
        assert_eq!(e.code, IO_FAILURE);
        assert!(e.msg.contains("n/alloc/c1/eth0"), "{}", e.msg);
        assert_eq!(kv.keys(), vec!["n/cursor"]);
    }

    #[test]
    fn concurrent_allocations_never_share_an_address() {
        let kv = FakeKv::default();
        let p = pool("10.240.0.0/24"); // 253 assignable, 8 x 30 = 240 wanted
        let got: Vec<Ipv4Addr> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..8)
                .map(|t| {
                    let (kv, p) = (&kv, &p);
                    s.spawn(move || {
                        let ipam = Ipam::new(kv, "n");
                        (0..30)
                            .map(|i| ipam.allocate(p, &format!("c{t}-{i}"), "eth0").unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        let distinct: BTreeSet<_> = got.iter().collect();
        assert_eq!(distinct.len(), 240);
        assert_eq!(Ipam::new(&kv, "n").in_use().unwrap(), 240);
    }

    #[test]
    fn lists_attachments_across_pages() {
        let kv = FakeKv {
            page: 2,
            ..FakeKv::default()
        };
        let ipam = Ipam::new(&kv, "n");
        let p = pool("10.240.0.0/24");
        for i in 0..7 {
            ipam.allocate(&p, &format!("c{i}"), "eth0").unwrap();
        }
        Ipam::new(&kv, "other").allocate(&p, "x", "eth0").unwrap();
        let mut atts = ipam.attachments().unwrap();
        atts.sort();
        assert_eq!(atts.len(), 7);
        assert_eq!(atts[0], ("c0".to_string(), "eth0".to_string()));
        assert_eq!(ipam.in_use().unwrap(), 7);
    }
}
