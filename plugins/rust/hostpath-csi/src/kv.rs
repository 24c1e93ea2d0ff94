//! Metadata in `wasi:keyvalue`, behind a trait so that tests can use a map.
//!
//! | key | value |
//! | --- | --- |
//! | `seq` | counter: the source of every volume and snapshot ID |
//! | `vol/<id>` | JSON [`VolumeRecord`](crate::records::VolumeRecord) |
//! | `vname/<name>` | the ID of the volume created under that name |
//! | `snap/<id>` | JSON [`SnapshotRecord`](crate::records::SnapshotRecord) |
//! | `sname/<name>` | the ID of the snapshot created under that name |
//!
//! Names and IDs are [`escape`]d, so a key always splits back into its prefix and one whole name,
//! whatever the name contains. Lists are derived from `list-keys` on a prefix: there is no index
//! key that two calls on different volumes would both have to rewrite.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::internal;
use crate::wasmgate::plugin::csi_types::CsiError;

/// The `wasi:keyvalue` bucket.
pub trait Kv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String>;
    fn set(&self, key: &str, value: &[u8]) -> Result<(), String>;
    fn delete(&self, key: &str) -> Result<(), String>;
    /// One page of keys and the cursor of the next page, none on the last.
    fn list_keys(&self, cursor: Option<u64>) -> Result<(Vec<String>, Option<u64>), String>;
    /// Adds `delta` (a missing key counts as 0) and returns the new value, atomically.
    fn increment(&self, key: &str, delta: u64) -> Result<u64, String>;
    /// Several values at once, in the order asked for.
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, String> {
        keys.iter().map(|k| self.get(k)).collect()
    }
}

/// A bound on `list-keys` paging, so that a store whose cursor never ends cannot spin us forever.
const MAX_PAGES: usize = 100_000;
/// How many keys one `get-many` asks for.
const BATCH: usize = 256;

pub const SEQ: &str = "seq";
pub const VOL: &str = "vol/";
pub const VNAME: &str = "vname/";
pub const SNAP: &str = "snap/";
pub const SNAME: &str = "sname/";

/// Percent-encodes every byte outside `[A-Za-z0-9._-]`, so any name becomes a plain key segment
/// and no two names share one.
pub fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn io(op: &str, key: &str, e: String) -> CsiError {
    internal(format!("keyvalue {op} {key}: {e}"))
}

/// Typed access to the bucket.
pub struct Store<'a, K: Kv> {
    kv: &'a K,
}

impl<'a, K: Kv> Store<'a, K> {
    pub fn new(kv: &'a K) -> Self {
        Store { kv }
    }

    pub fn get_text(&self, key: &str) -> Result<Option<String>, CsiError> {
        match self.kv.get(key).map_err(|e| io("get", key, e))? {
            None => Ok(None),
            Some(raw) => String::from_utf8(raw)
                .map(Some)
                .map_err(|_| internal(format!("keyvalue {key} holds invalid utf-8"))),
        }
    }

    pub fn set_text(&self, key: &str, value: &str) -> Result<(), CsiError> {
        self.kv
            .set(key, value.as_bytes())
            .map_err(|e| io("set", key, e))
    }

    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CsiError> {
        match self.kv.get(key).map_err(|e| io("get", key, e))? {
            None => Ok(None),
            Some(raw) => decode(key, &raw).map(Some),
        }
    }

    pub fn set_json<T: Serialize>(&self, key: &str, value: &T) -> Result<(), CsiError> {
        let raw = serde_json::to_vec(value).map_err(|e| internal(format!("encode {key}: {e}")))?;
        self.kv.set(key, &raw).map_err(|e| io("set", key, e))
    }

    pub fn delete(&self, key: &str) -> Result<(), CsiError> {
        self.kv.delete(key).map_err(|e| io("delete", key, e))
    }

    pub fn increment(&self, key: &str) -> Result<u64, CsiError> {
        self.kv
            .increment(key, 1)
            .map_err(|e| io("increment", key, e))
    }

    /// Every key that starts with `prefix`, in store order, paging through `list-keys`.
    pub fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, CsiError> {
        let mut found = Vec::new();
        let mut cursor = None;
        for _ in 0..MAX_PAGES {
            let (keys, next) = self
                .kv
                .list_keys(cursor)
                .map_err(|e| io("list-keys", prefix, e))?;
            found.extend(keys.into_iter().filter(|k| k.starts_with(prefix)));
            match next {
                None => {
                    found.sort();
                    found.dedup();
                    return Ok(found);
                }
                Some(c) if cursor == Some(c) => break,
                Some(c) => cursor = Some(c),
            }
        }
        Err(internal(format!(
            "keyvalue list-keys {prefix}: the cursor never reached the end"
        )))
    }

    /// Every JSON value under `prefix`, with its key. Keys that vanish between the listing and the
    /// read (a concurrent delete) are skipped.
    pub fn values_with_prefix<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, CsiError> {
        let keys = self.keys_with_prefix(prefix)?;
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH) {
            let values = self
                .kv
                .get_many(chunk)
                .map_err(|e| io("get-many", prefix, e))?;
            for (key, value) in chunk.iter().zip(values) {
                if let Some(raw) = value {
                    out.push((key.clone(), decode(key, &raw)?));
                }
            }
        }
        Ok(out)
    }
}

fn decode<T: DeserializeOwned>(key: &str, raw: &[u8]) -> Result<T, CsiError> {
    serde_json::from_slice(raw)
        .map_err(|e| internal(format!("keyvalue {key} holds an unreadable record: {e}")))
}

#[cfg(test)]
pub mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    /// An in-memory bucket shared by threads like one store shared by instances. It serves
    /// `list-keys` in pages of `page` keys with an offset cursor, like the wasmgate host, and keeps
    /// counters as decimal text.
    pub struct FakeKv {
        pub map: Mutex<BTreeMap<String, Vec<u8>>>,
        pub page: usize,
    }

    impl Default for FakeKv {
        fn default() -> Self {
            FakeKv {
                map: Mutex::default(),
                page: 3,
            }
        }
    }

    impl FakeKv {
        pub fn keys(&self) -> Vec<String> {
            self.map.lock().unwrap().keys().cloned().collect()
        }

        pub fn text(&self, key: &str) -> Option<String> {
            self.map
                .lock()
                .unwrap()
                .get(key)
                .map(|v| String::from_utf8(v.clone()).unwrap())
        }
    }

    impl Kv for FakeKv {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
            Ok(self.map.lock().unwrap().get(key).cloned())
        }

        fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
            self.map.lock().unwrap().insert(key.into(), value.to_vec());
            Ok(())
        }

        fn delete(&self, key: &str) -> Result<(), String> {
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

    #[test]
    fn escape_keeps_names_apart() {
        assert_eq!(escape("pvc-1.a_b"), "pvc-1.a_b");
        assert_eq!(escape("a/b"), "a%2Fb");
        assert_eq!(escape("a%2Fb"), "a%252Fb");
        assert_eq!(escape("ü"), "%C3%BC");
        assert_eq!(escape(""), "");
    }

    #[test]
    fn prefix_listing_walks_every_page() {
        let kv = FakeKv {
            page: 2,
            ..FakeKv::default()
        };
        let store = Store::new(&kv);
        for i in 0..7 {
            store.set_json(&format!("vol/v{i}"), &i).unwrap();
            store.set_text(&format!("vname/n{i}"), "x").unwrap();
        }
        let got: Vec<(String, i32)> = store.values_with_prefix("vol/").unwrap();
        assert_eq!(got.len(), 7);
        assert_eq!(got[6], ("vol/v6".to_string(), 6));
        assert_eq!(store.keys_with_prefix("vname/").unwrap().len(), 7);
    }

    #[test]
    fn unreadable_record_is_internal_and_names_the_key() {
        let kv = FakeKv::default();
        kv.set("vol/x", b"{not json").unwrap();
        let e = Store::new(&kv).get_json::<u32>("vol/x").unwrap_err();
        assert_eq!(
            e.code,
            crate::wasmgate::plugin::csi_types::ErrorCode::Internal
        );
        assert!(e.message.contains("vol/x"), "{}", e.message);
    }
}
