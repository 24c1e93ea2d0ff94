//! The on-disk DEL queue: where the shim leaves a DEL it could not deliver.
//!
//! A runtime treats a failed DEL as "retry later" at best and "leak it" at worst, and Multus
//! simply swallows the error. Like Cilium, we instead write the DEL to disk and report success;
//! the daemon replays the queue ([`DelQueue::entries`], then [`DelQueue::remove`] after each
//! successful replay) when it starts and while it runs. DEL is idempotent, so replaying one twice
//! is harmless, which is why a crash between replay and remove is acceptable.
//!
//! Each entry is one [`Request`] line in its own file, named after the attachment so a repeated
//! DEL for the same attachment and config replaces the earlier one instead of piling up. Beside
//! an entry the daemon may keep `<name>.retry`, its [`Attempts`] so far. What can never be
//! applied is set aside, never deleted: `<name>.json.bad` (not a queued DEL at all) and
//! `<name>.failed` (a DEL the daemon can never apply; see [`DelQueue::set_aside`]).

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufReader};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::command::Command;
use crate::wire::{self, Request};

const SUFFIX: &str = ".json";
const BAD_SUFFIX: &str = ".bad";
const FAILED_EXT: &str = "failed";
const RETRY_EXT: &str = "retry";
const TEMP_PREFIX: &str = ".tmp-";
/// Keeps file names well under NAME_MAX (255) whatever the container ID is.
const MAX_ID_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelQueue {
    dir: PathBuf,
}

/// One queued DEL, as [`DelQueue::entries`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    pub request: Request,
    /// When it was queued (the file's mtime; a repeated DEL renews it).
    pub queued_at: SystemTime,
}

/// The daemon's failed attempts at one entry so far, kept beside it so a restart resumes the
/// backoff and still shows the last error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempts {
    pub count: u32,
    /// When the last one ended, in milliseconds since the Unix epoch.
    pub last_ms: u64,
    pub last_error: String,
}

impl DelQueue {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DelQueue { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether `path` names a live entry rather than a temp file or a `.bad` one.
    pub fn is_entry(path: &Path) -> bool {
        path.file_name()
            .and_then(OsStr::to_str)
            .is_some_and(is_entry_name)
    }

    /// Durably queues a DEL and returns the file it landed in.
    ///
    /// Write to a temporary file, fsync it, rename it into place and fsync the directory: after a
    /// crash the entry is either wholly there or absent, never half-written.
    pub fn push(&self, req: &Request) -> io::Result<PathBuf> {
        if req.invocation.command != Command::Del {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "only DEL requests can be queued, got {}",
                    req.invocation.command
                ),
            ));
        }
        // The queue holds configs that may carry secrets, so only root (the runtime) may read it.
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;

        let final_path = self.dir.join(entry_name(req));
        let temp_path = self.dir.join(temp_name());
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp_path)?;
            wire::write_line(&mut f, req)?;
            f.sync_all()?;
            fs::rename(&temp_path, &final_path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temp_path);
            return Err(e);
        }
        File::open(&self.dir)?.sync_all()?;
        Ok(final_path)
    }

    /// Queued DELs, oldest first (by mtime, then by name). A missing directory is an empty queue.
    ///
    /// An entry that does not decode as a DEL request is renamed to `*.bad` and skipped, so one
    /// corrupt file cannot block every later DEL. Entries that vanish or cannot be read while we
    /// list are skipped too and will be seen on the next listing.
    pub fn entries(&self) -> io::Result<Vec<Entry>> {
        let mut found = Vec::new();
        for (path, meta) in self.files(is_entry_name)? {
            match read_entry(&path) {
                Ok(Some(request)) => found.push(Entry {
                    path,
                    request,
                    queued_at: meta.modified().unwrap_or(UNIX_EPOCH),
                }),
                Ok(None) => {
                    let mut bad = path.clone().into_os_string();
                    bad.push(BAD_SUFFIX);
                    let _ = fs::rename(&path, bad);
                }
                Err(_) => continue,
            }
        }
        found.sort_by(|a, b| (a.queued_at, &a.path).cmp(&(b.queued_at, &b.path)));
        Ok(found)
    }

    /// [`DelQueue::entries`] without their times.
    pub fn list(&self) -> io::Result<Vec<(PathBuf, Request)>> {
        Ok(self
            .entries()?
            .into_iter()
            .map(|e| (e.path, e.request))
            .collect())
    }

    /// The regular files of the queue directory whose names pass `want`, with their metadata.
    fn files(&self, want: impl Fn(&str) -> bool) -> io::Result<Vec<(PathBuf, fs::Metadata)>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry?;
            if !entry.file_name().to_str().is_some_and(&want) {
                continue;
            }
            // symlink_metadata: a symlink in the queue is not ours, never follow it.
            match entry.path().symlink_metadata() {
                Ok(meta) if meta.is_file() => found.push((entry.path(), meta)),
                _ => continue,
            }
        }
        Ok(found)
    }

    /// Deletes an entry; an entry that is already gone is fine. Paths outside the queue
    /// directory are refused. Its [`Attempts`] go with it.
    pub fn remove(&self, path: &Path) -> io::Result<()> {
        self.check_inside(path)?;
        remove_if_there(&path.with_extension(RETRY_EXT))?;
        remove_if_there(path)
    }

    /// Moves an entry the daemon can never apply out of the queue, to `<name>.failed`, where it
    /// is kept for the operator and looked at again by [`DelQueue::failed`] when the daemon
    /// (re)starts: a config change may have made it applicable.
    pub fn set_aside(&self, path: &Path) -> io::Result<PathBuf> {
        self.check_inside(path)?;
        let failed = path.with_extension(FAILED_EXT);
        fs::rename(path, &failed)?;
        remove_if_there(&path.with_extension(RETRY_EXT))?;
        Ok(failed)
    }

    /// The entries set aside as `.failed`, each with its request when it still decodes as a DEL.
    pub fn failed(&self) -> io::Result<Vec<(PathBuf, Option<Request>)>> {
        let mut found = Vec::new();
        for (path, _) in self.files(|n| is_set_aside_name(n) && !n.ends_with(BAD_SUFFIX))? {
            let req = read_entry(&path).ok().flatten();
            found.push((path, req));
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    /// How many files are set aside, `.failed` and `.bad` alike.
    pub fn set_aside_count(&self) -> io::Result<usize> {
        Ok(self.files(is_set_aside_name)?.len())
    }

    /// Puts a `.failed` entry back in the queue. If the same DEL has been queued again meanwhile,
    /// that one stands and the set-aside copy is dropped.
    pub fn restore(&self, failed: &Path) -> io::Result<PathBuf> {
        self.check_inside(failed)?;
        let entry = failed.with_extension(SUFFIX.trim_start_matches('.'));
        if entry.symlink_metadata().is_ok() {
            fs::remove_file(failed)?;
        } else {
            fs::rename(failed, &entry)?;
        }
        Ok(entry)
    }

    /// The daemon's failed attempts at an entry so far; none recorded, or unreadable, is none.
    pub fn attempts(&self, path: &Path) -> Option<Attempts> {
        let text = fs::read(path.with_extension(RETRY_EXT)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Records the daemon's failed attempts at an entry. Written whole or not at all, but not
    /// synced: losing it to a crash only restarts that entry's backoff.
    pub fn record_attempts(&self, path: &Path, attempts: &Attempts) -> io::Result<()> {
        self.check_inside(path)?;
        let temp_path = self.dir.join(temp_name());
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp_path)?;
            serde_json::to_writer(&mut f, attempts)?;
            fs::rename(&temp_path, path.with_extension(RETRY_EXT))
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temp_path);
        }
        written
    }

    /// Refuses paths outside the queue directory, so a bad caller cannot touch arbitrary files.
    fn check_inside(&self, path: &Path) -> io::Result<()> {
        if path.parent() == Some(self.dir.as_path()) && path.file_name().is_some() {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not an entry of the DEL queue at {}",
                path.display(),
                self.dir.display()
            ),
        ))
    }
}

fn remove_if_there(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn is_entry_name(name: &str) -> bool {
    name.ends_with(SUFFIX) && !name.starts_with('.')
}

fn is_set_aside_name(name: &str) -> bool {
    !name.starts_with('.')
        && (name.ends_with(BAD_SUFFIX) || name.ends_with(&format!(".{FAILED_EXT}")))
}

/// `Ok(None)` for an entry that is present but not a DEL request.
fn read_entry(path: &Path) -> io::Result<Option<Request>> {
    let f = File::open(path)?;
    match wire::read_line::<_, Request>(BufReader::new(f)) {
        Ok(req) if req.invocation.command == Command::Del => Ok(Some(req)),
        Ok(_) => Ok(None),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn entry_name(req: &Request) -> String {
    let digest = hex::encode(Sha256::digest(req.config.as_bytes()));
    format!(
        "{}-{}-{}{SUFFIX}",
        sanitize(&req.invocation.container_id),
        sanitize(&req.invocation.ifname),
        &digest[..12]
    )
}

/// Maps anything outside `[A-Za-z0-9_.-]` to '_' and never starts with '.', so a name can
/// neither escape the directory nor pass for a temporary or hidden file.
fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(MAX_ID_LEN)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with('.') {
        out.insert(0, '_');
    }
    out
}

fn temp_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{TEMP_PREFIX}{}-{nanos}-{n}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::Invocation;
    use std::os::unix::fs::PermissionsExt;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let p = std::env::temp_dir().join(format!(
                "wasmgate-cni-queue-{tag}-{}-{nanos}",
                std::process::id()
            ));
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn del(id: &str, ifname: &str, config: &str) -> Request {
        Request {
            invocation: Invocation {
                command: Command::Del,
                container_id: id.into(),
                netns: String::new(),
                ifname: ifname.into(),
                args: vec![],
                path: vec!["/opt/cni/bin".into()],
            },
            config: config.into(),
        }
    }

    #[test]
    fn push_then_list_then_remove() {
        let t = TempDir::new("basic");
        let q = DelQueue::new(t.0.join("nested/queue"));
        assert_eq!(q.list().unwrap(), vec![], "missing dir is an empty queue");

        let req = del("abc", "eth0", r#"{"cniVersion":"1.1.0"}"#);
        let path = q.push(&req).unwrap();
        let digest = hex::encode(Sha256::digest(req.config.as_bytes()));
        assert_eq!(
            path,
            q.dir().join(format!("abc-eth0-{}.json", &digest[..12]))
        );
        assert!(DelQueue::is_entry(&path));

        let mode = fs::metadata(q.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        assert_eq!(q.list().unwrap(), vec![(path.clone(), req)]);
        let leftovers: Vec<_> = fs::read_dir(q.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers.len(),
            1,
            "no temp files left behind: {leftovers:?}"
        );

        q.remove(&path).unwrap();
        q.remove(&path).unwrap();
        assert!(q.list().unwrap().is_empty());
    }

    #[test]
    fn repeated_del_replaces_and_distinct_configs_do_not() {
        let t = TempDir::new("dedup");
        let q = DelQueue::new(&t.0);
        let a = q.push(&del("c", "eth0", "{}")).unwrap();
        let b = q.push(&del("c", "eth0", "{}")).unwrap();
        assert_eq!(a, b);
        let c = q.push(&del("c", "eth0", "{\"x\":1}")).unwrap();
        assert_ne!(a, c);
        assert_eq!(q.list().unwrap().len(), 2);
    }

    #[test]
    fn list_is_oldest_first() {
        fn queued_ids(q: &DelQueue) -> Vec<String> {
            q.list()
                .unwrap()
                .into_iter()
                .map(|(_, r)| r.invocation.container_id)
                .collect()
        }
        fn touch(path: &std::path::Path, at: SystemTime) {
            File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(at)
                .unwrap();
        }

        let t = TempDir::new("order");
        let q = DelQueue::new(&t.0);
        let newer = q.push(&del("aaa", "eth0", "{}")).unwrap();
        let older = q.push(&del("zzz", "eth0", "{}")).unwrap();
        let old = SystemTime::now() - std::time::Duration::from_secs(3600);
        touch(&older, old);
        assert_eq!(queued_ids(&q), ["zzz", "aaa"]);

        // Same mtime: name order decides.
        let same = SystemTime::now();
        for p in [&newer, &older] {
            touch(p, same);
        }
        assert_eq!(queued_ids(&q), ["aaa", "zzz"]);
    }

    #[test]
    fn corrupt_and_non_del_entries_are_set_aside() {
        let t = TempDir::new("bad");
        let q = DelQueue::new(&t.0);
        let good = q.push(&del("ok", "eth0", "{}")).unwrap();
        fs::write(t.0.join("junk.json"), b"not json\n").unwrap();
        fs::write(t.0.join("half.json"), b"{\"invocation\":").unwrap();
        let mut add = del("add", "eth0", "{}");
        add.invocation.command = Command::Add;
        let mut line = Vec::new();
        wire::write_line(&mut line, &add).unwrap();
        fs::write(t.0.join("add.json"), line).unwrap();
        fs::write(t.0.join(".tmp-1-2-3"), b"partial").unwrap();
        fs::write(t.0.join("notes.txt"), b"ignored").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", t.0.join("link.json")).unwrap();
        fs::create_dir(t.0.join("sub.json")).unwrap();

        let listed = q.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, good);
        for name in ["junk", "half", "add"] {
            assert!(
                t.0.join(format!("{name}.json.bad")).exists(),
                "{name} renamed"
            );
            assert!(
                !t.0.join(format!("{name}.json")).exists(),
                "{name} moved away"
            );
        }
        assert!(t.0.join(".tmp-1-2-3").exists(), "temp files are left alone");
        assert!(
            t.0.join("link.json").symlink_metadata().is_ok(),
            "symlinks are left alone"
        );
        assert_eq!(
            q.list().unwrap().len(),
            1,
            "bad files stay out of later listings"
        );
    }

    #[test]
    fn push_refuses_non_del_and_sanitizes_names() {
        let t = TempDir::new("names");
        let q = DelQueue::new(&t.0);
        let mut add = del("c", "eth0", "{}");
        add.invocation.command = Command::Add;
        assert_eq!(
            q.push(&add).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );

        let p = q.push(&del("../../etc/passwd", "a/b", "{}")).unwrap();
        assert_eq!(p.parent(), Some(t.0.as_path()));
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("_.._.._etc_passwd-a_b-"), "{name}");

        let p = q.push(&del("", "", "{}")).unwrap();
        assert!(p.file_name().unwrap().to_str().unwrap().starts_with("_-_-"));

        let long = "x".repeat(1000);
        let p = q.push(&del(&long, "eth0", "{}")).unwrap();
        assert!(p.file_name().unwrap().len() < 255);
        assert_eq!(q.list().unwrap().len(), 3);
    }

    #[test]
    fn remove_refuses_paths_outside_the_queue() {
        let t = TempDir::new("remove");
        let q = DelQueue::new(&t.0);
        let outside = std::env::temp_dir().join("wasmgate-cni-not-in-queue.json");
        assert_eq!(
            q.remove(&outside).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            q.remove(&t.0).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        q.remove(&t.0.join("never-existed.json")).unwrap();
    }

    #[test]
    fn attempts_set_aside_and_restore() {
        let t = TempDir::new("aside");
        let q = DelQueue::new(&t.0);
        let req = del("c", "eth0", "{}");
        let path = q.push(&req).unwrap();
        assert_eq!(q.attempts(&path), None);
        let tried = Attempts {
            count: 3,
            last_ms: 42,
            last_error: "plugin late is not loaded".into(),
        };
        q.record_attempts(&path, &tried).unwrap();
        assert_eq!(q.attempts(&path), Some(tried.clone()));
        assert_eq!(q.list().unwrap(), vec![(path.clone(), req.clone())]);

        let failed = q.set_aside(&path).unwrap();
        assert_eq!(failed, path.with_extension("failed"));
        assert!(q.list().unwrap().is_empty());
        assert_eq!(q.attempts(&path), None, "attempts go with the entry");
        fs::write(t.0.join("junk.json"), b"junk\n").unwrap();
        assert!(q.list().unwrap().is_empty());
        assert_eq!(q.set_aside_count().unwrap(), 2, "a .failed and a .bad");
        assert_eq!(
            q.failed().unwrap(),
            vec![(failed.clone(), Some(req.clone()))]
        );

        assert_eq!(q.restore(&failed).unwrap(), path);
        assert_eq!(q.list().unwrap(), vec![(path.clone(), req.clone())]);
        assert_eq!(q.set_aside_count().unwrap(), 1);

        // Queued again while set aside: the live entry stands, the copy goes.
        let failed = q.set_aside(&path).unwrap();
        q.push(&req).unwrap();
        assert_eq!(q.restore(&failed).unwrap(), path);
        assert!(!failed.exists());
        assert_eq!(q.list().unwrap().len(), 1);

        q.record_attempts(&path, &tried).unwrap();
        q.remove(&path).unwrap();
        let left: Vec<_> = fs::read_dir(&t.0)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["junk.json.bad"], "remove takes the attempts too");

        let outside = std::env::temp_dir().join("wasmgate-cni-not-in-queue.json");
        for refused in [
            q.set_aside(&outside).unwrap_err(),
            q.restore(&outside).unwrap_err(),
            q.record_attempts(&outside, &tried).unwrap_err(),
        ] {
            assert_eq!(refused.kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn push_into_an_unwritable_place_fails() {
        let t = TempDir::new("blocked");
        fs::write(&t.0, b"a file, not a directory").unwrap();
        let q = DelQueue::new(t.0.join("q"));
        assert!(q.push(&del("c", "eth0", "{}")).is_err());
        let _ = fs::remove_file(&t.0);
    }
}
