//! `wasi:keyvalue@0.2.0-draft` for plugins, kept on disk in one redb database per plugin.
//!
//! Every write is its own durable transaction, so a `kill -9` or a power cut never loses an IP
//! allocation that a plugin was told had been stored. `increment` runs inside a single write
//! transaction; redb serialises writers, which makes it the atomic claim that lets concurrent ADDs
//! allocate without duplicates. Buckets are tables: the empty identifier (the only one the stock
//! wasmtime CLI accepts) is the plugin's default bucket.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition, TableError};
use wasmtime::component::{Resource, ResourceTableError};

use crate::bindings::keyvalue::{atomics, batch, store};
use crate::host::HostState;

/// The most keys one `list-keys` page returns; the cursor walks the rest.
const LIST_PAGE: usize = 1000;

/// A plugin's persistent store.
pub struct KvStore {
    db: Database,
}

/// An open bucket: a guest-held handle naming a table.
pub struct Bucket {
    table: String,
}

/// The host-side error behind `wasi:keyvalue/store.error`.
#[derive(Debug)]
pub enum KvError {
    NoSuchStore,
    Other(String),
}

impl From<ResourceTableError> for KvError {
    fn from(err: ResourceTableError) -> Self {
        Self::Other(err.to_string())
    }
}

fn other(err: impl std::fmt::Display) -> KvError {
    KvError::Other(err.to_string())
}

fn table_def(name: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(name)
}

/// Runs `f`, which waits on the disk (a durable commit's fdatasync). Guests run on the caller's
/// tokio worker (see [`crate::call`]); on a multi-threaded runtime the worker's other tasks move
/// to another thread for the wait, so one plugin's commits do not stall the calls queued behind
/// it. Elsewhere (a single-threaded runtime, no runtime) `f` just runs.
fn off_worker<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

impl KvStore {
    /// Opens (or creates) the store at `path`, recovering it if the last writer was killed.
    pub fn open(path: &Path) -> Result<Self, String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        let db = Database::create(path).map_err(|e| format!("open {}: {e}", path.display()))?;
        Ok(Self { db })
    }

    pub fn get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let txn = self.db.begin_read().map_err(other)?;
        let t = match txn.open_table(table_def(table)) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(other(e)),
        };
        Ok(t.get(key).map_err(other)?.map(|v| v.value().to_vec()))
    }

    /// Applies `f` to the table inside one durable write transaction.
    fn write<R>(
        &self,
        table: &str,
        f: impl FnOnce(&mut redb::Table<&'static str, &'static [u8]>) -> Result<R, KvError>,
    ) -> Result<R, KvError> {
        off_worker(|| {
            let txn = self.db.begin_write().map_err(other)?;
            let out = {
                let mut t = txn.open_table(table_def(table)).map_err(other)?;
                f(&mut t)?
            };
            txn.commit().map_err(other)?;
            Ok(out)
        })
    }

    pub fn set(&self, table: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.write(table, |t| t.insert(key, value).map(drop).map_err(other))
    }

    pub fn set_many(&self, table: &str, kvs: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        self.write(table, |t| {
            for (k, v) in kvs {
                t.insert(k.as_str(), v.as_slice()).map_err(other)?;
            }
            Ok(())
        })
    }

    pub fn delete_many(&self, table: &str, keys: &[String]) -> Result<(), KvError> {
        self.write(table, |t| {
            for k in keys {
                t.remove(k.as_str()).map_err(other)?;
            }
            Ok(())
        })
    }

    /// Adds `delta` to the decimal number stored at `key` (absent counts as 0), atomically.
    /// Values are decimal text, as the stock wasmtime implementation stores them.
    pub fn increment(&self, table: &str, key: &str, delta: u64) -> Result<u64, KvError> {
        self.write(table, |t| {
            let current = match t.get(key).map_err(other)? {
                None => 0,
                Some(v) => std::str::from_utf8(v.value())
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| other(format!("value at {key} is not a decimal counter")))?,
            };
            let next = current
                .checked_add(delta)
                .ok_or_else(|| other(format!("incrementing {key} overflows")))?;
            t.insert(key, next.to_string().as_bytes()).map_err(other)?;
            Ok(next)
        })
    }

    /// Keys in order, `LIST_PAGE` at a time; the cursor is the offset of the next page.
    pub fn list_keys(
        &self,
        table: &str,
        cursor: Option<u64>,
    ) -> Result<(Vec<String>, Option<u64>), KvError> {
        let txn = self.db.begin_read().map_err(other)?;
        let t = match txn.open_table(table_def(table)) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok((Vec::new(), None)),
            Err(e) => return Err(other(e)),
        };
        let skip = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
        let mut keys = Vec::new();
        let mut more = false;
        for entry in t.iter().map_err(other)?.skip(skip) {
            if keys.len() == LIST_PAGE {
                more = true;
                break;
            }
            let (k, _) = entry.map_err(other)?;
            keys.push(k.value().to_string());
        }
        let next = more.then(|| (skip + keys.len()) as u64);
        Ok((keys, next))
    }
}

/// Bucket identifiers name tables; keep them short and printable.
fn bucket_table(identifier: &str) -> Result<String, KvError> {
    if identifier.is_empty() {
        return Ok("default".to_string());
    }
    let ok = identifier.len() <= 64
        && identifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(format!("bucket.{identifier}"))
    } else {
        Err(KvError::NoSuchStore)
    }
}

impl HostState {
    fn bucket(&self, b: &Resource<Bucket>) -> Result<String, KvError> {
        Ok(self.table.get(b)?.table.clone())
    }
}

impl store::Host for HostState {
    fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, KvError> {
        let table = bucket_table(&identifier)?;
        Ok(self.table.push(Bucket { table })?)
    }

    fn convert_error(&mut self, err: KvError) -> wasmtime::Result<store::Error> {
        Ok(match err {
            KvError::NoSuchStore => store::Error::NoSuchStore,
            KvError::Other(e) => store::Error::Other(e),
        })
    }
}

impl store::HostBucket for HostState {
    fn get(&mut self, b: Resource<Bucket>, key: String) -> Result<Option<Vec<u8>>, KvError> {
        let t = self.bucket(&b)?;
        self.kv.get(&t, &key)
    }

    fn set(&mut self, b: Resource<Bucket>, key: String, value: Vec<u8>) -> Result<(), KvError> {
        let t = self.bucket(&b)?;
        self.kv.set(&t, &key, &value)
    }

    fn delete(&mut self, b: Resource<Bucket>, key: String) -> Result<(), KvError> {
        let t = self.bucket(&b)?;
        self.kv.delete_many(&t, &[key])
    }

    fn exists(&mut self, b: Resource<Bucket>, key: String) -> Result<bool, KvError> {
        let t = self.bucket(&b)?;
        Ok(self.kv.get(&t, &key)?.is_some())
    }

    fn list_keys(
        &mut self,
        b: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Result<store::KeyResponse, KvError> {
        let t = self.bucket(&b)?;
        let (keys, cursor) = self.kv.list_keys(&t, cursor)?;
        Ok(store::KeyResponse { keys, cursor })
    }

    fn drop(&mut self, b: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl atomics::Host for HostState {
    fn increment(&mut self, b: Resource<Bucket>, key: String, delta: u64) -> Result<u64, KvError> {
        let t = self.bucket(&b)?;
        self.kv.increment(&t, &key, delta)
    }
}

impl batch::Host for HostState {
    fn get_many(
        &mut self,
        b: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, KvError> {
        let t = self.bucket(&b)?;
        keys.into_iter()
            .map(|k| Ok(self.kv.get(&t, &k)?.map(|v| (k, v))))
            .collect()
    }

    fn set_many(
        &mut self,
        b: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<(), KvError> {
        let t = self.bucket(&b)?;
        self.kv.set_many(&t, &key_values)
    }

    fn delete_many(&mut self, b: Resource<Bucket>, keys: Vec<String>) -> Result<(), KvError> {
        let t = self.bucket(&b)?;
        self.kv.delete_many(&t, &keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store(tag: &str) -> (KvStore, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("wg-kv-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("kv.redb");
        (KvStore::open(&path).unwrap(), dir)
    }

    #[test]
    fn values_survive_reopen() {
        let (kv, dir) = temp_store("reopen");
        kv.set("default", "a", b"1").unwrap();
        assert_eq!(kv.increment("default", "n", 5).unwrap(), 5);
        drop(kv);
        let kv = KvStore::open(&dir.join("kv.redb")).unwrap();
        assert_eq!(kv.get("default", "a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(kv.increment("default", "n", 1).unwrap(), 6);
        assert_eq!(kv.get("default", "missing").unwrap(), None);
        assert_eq!(kv.get("no-table", "a").unwrap(), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn concurrent_increments_never_repeat() {
        let (kv, dir) = temp_store("incr");
        let kv = std::sync::Arc::new(kv);
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let kv = kv.clone();
                std::thread::spawn(move || {
                    (0..25)
                        .map(|_| kv.increment("default", "c", 1).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<u64> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort();
        assert_eq!(all, (1..=200).collect::<Vec<_>>());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn increment_rejects_non_counters() {
        let (kv, dir) = temp_store("nonnum");
        kv.set("default", "x", b"abc").unwrap();
        let err = kv.increment("default", "x", 1).unwrap_err();
        assert!(matches!(err, KvError::Other(m) if m.contains("not a decimal counter")));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn list_keys_pages_in_order() {
        let (kv, dir) = temp_store("list");
        let kvs: Vec<_> = (0..1500).map(|i| (format!("k{i:05}"), vec![1u8])).collect();
        kv.set_many("default", &kvs).unwrap();
        let (first, cursor) = kv.list_keys("default", None).unwrap();
        assert_eq!(first.len(), LIST_PAGE);
        assert_eq!(first[0], "k00000");
        let (rest, end) = kv.list_keys("default", cursor).unwrap();
        assert_eq!(rest.len(), 500);
        assert_eq!(rest[499], "k01499");
        assert_eq!(end, None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bucket_names_are_checked() {
        assert_eq!(bucket_table("").unwrap(), "default");
        assert_eq!(bucket_table("ipam").unwrap(), "bucket.ipam");
        assert!(matches!(bucket_table("../etc"), Err(KvError::NoSuchStore)));
    }
}
