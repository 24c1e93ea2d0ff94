//! Unix sockets with tight permissions, and the line-framed JSON both of ours speak.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;

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
    // The umask closes the window between bind and chmod in which the socket would be world-open.
    let old = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(path);
    unsafe { libc::umask(old) };
    let listener = listener?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
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
