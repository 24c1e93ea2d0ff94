//! Unix sockets with tight permissions, and the line-framed JSON both of ours speak.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// The largest request line accepted: a network config with a big prevResult fits many times.
const MAX_LINE: u64 = 16 << 20;

/// Binds `path` with `mode`, replacing a stale socket but never a regular file.
pub fn bind(path: &Path, mode: u32) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(_) => {}
    }
    bind_private(path, mode)
}

/// Binds in a fresh directory only this process can enter, sets `mode`, then renames the
/// socket into place: no client ever sees it with the mode the umask gave it. The umask itself
/// is process-wide, so changing it around `bind` would change every file other tasks create
/// meanwhile.
fn bind_private(path: &Path, mode: u32) -> std::io::Result<UnixListener> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    // Short: the temporary socket path must fit sun_path as the final one does. A leading dot
    // keeps kubelet's plugin watcher from looking inside it.
    let tmp = dir.join(format!(
        ".wg{:x}-{:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let private = || std::fs::DirBuilder::new().mode(0o700).create(&tmp);
    if let Err(e) = private() {
        // Left by a crashed process that had our pid; the name is ours alone.
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(e);
        }
        std::fs::remove_dir_all(&tmp)?;
        private()?;
    }
    let bound = (|| {
        let inner = tmp.join("s");
        let listener = UnixListener::bind(&inner)?;
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&inner, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(tmp.join("s"));
    let _ = std::fs::remove_dir(&tmp);
    bound
}

/// The wait after a failed `accept`. Running out of descriptors (EMFILE, ENFILE) or memory
/// does not clear by retrying at once: the connection stays in the backlog, so a loop that
/// retries without waiting spins a core while every other socket of the node needs the CPU.
#[derive(Debug)]
pub struct AcceptBackoff {
    next: Duration,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    /// How long to wait after `error`, logged with the socket's name; doubles up to a second.
    pub fn failed(&mut self, socket: &str, error: &std::io::Error) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        tracing::warn!(socket, ?wait, "accept failed: {error}");
        wait
    }

    pub fn succeeded(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

/// The next connection on `listener`, waiting out failed accepts (see [`AcceptBackoff`]).
pub async fn accept(
    listener: &UnixListener,
    backoff: &mut AcceptBackoff,
    socket: &str,
) -> UnixStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                backoff.succeeded();
                return stream;
            }
            Err(e) => tokio::time::sleep(backoff.failed(socket, &e)).await,
        }
    }
}

/// Reads one JSON line; `Ok(None)` when the peer closed without sending one.
pub async fn read_json<T: DeserializeOwned>(
    stream: &mut BufReader<UnixStream>,
) -> std::io::Result<Option<Result<T, serde_json::Error>>> {
    use tokio::io::AsyncReadExt;
    let mut line = Vec::new();
    let n = (&mut *stream)
        .take(MAX_LINE)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') && n as u64 == MAX_LINE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("request longer than {MAX_LINE} bytes"),
        ));
    }
    Ok(Some(serde_json::from_slice(&line)))
}

pub async fn write_json<T: Serialize>(
    stream: &mut BufReader<UnixStream>,
    value: &T,
) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    stream.get_mut().write_all(&bytes).await?;
    stream.get_mut().flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The umask as the kernel reports it, read without setting it.
    fn umask() -> String {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
        line.split_whitespace().nth(1).unwrap().to_string()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bind_never_touches_the_process_umask_and_leaves_exact_modes() {
        let dir = std::env::temp_dir().join(format!("wg-bind-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let before = umask();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Another task creating files meanwhile would get whatever umask it sees.
        let watcher = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seen = std::collections::BTreeSet::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    seen.insert(umask());
                }
                seen
            })
        };
        for i in 0..300 {
            let path = dir.join(format!("s{i}.sock"));
            let mode = if i % 2 == 0 { 0o600 } else { 0o660 };
            let _listener = bind(&path, mode).unwrap();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            assert!(meta.file_type().is_socket());
            assert_eq!(meta.permissions().mode() & 0o777, mode);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen = watcher.join().unwrap();
        assert_eq!(seen, [before].into(), "the umask changed while binding");
        // Only the sockets are left: no private bind directories.
        let left = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(left, 300);
        // A client can connect through the final path.
        let path = dir.join("s0.sock");
        let listener = bind(&path, 0o600).unwrap();
        let (client, accepted) = tokio::join!(UnixStream::connect(&path), listener.accept());
        client.unwrap();
        accepted.unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
