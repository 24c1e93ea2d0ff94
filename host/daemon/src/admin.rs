//! The admin socket: list plugins and reload one. Also the client the CLI uses.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::BufReader;
use tokio::net::UnixListener;
use wasmgate_engine::{PluginInfo, Registry};

use crate::socket::{read_json, write_json};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum AdminRequest {
    List,
    Reload { name: String },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum AdminResponse {
    Ok { plugins: Vec<PluginInfo> },
    Error { message: String },
}

pub async fn serve(listener: UnixListener, registry: Arc<Registry>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut stream = BufReader::new(stream);
            let resp = match read_json::<AdminRequest>(&mut stream).await {
                Ok(Some(Ok(AdminRequest::List))) => AdminResponse::Ok {
                    plugins: registry.list(),
                },
                Ok(Some(Ok(AdminRequest::Reload { name }))) => match registry.reload(&name).await {
                    Ok(info) => {
                        tracing::info!(plugin = %name, sha256 = %info.sha256, "reloaded on request");
                        AdminResponse::Ok {
                            plugins: vec![info],
                        }
                    }
                    Err(e) => {
                        tracing::error!(plugin = %name, "reload refused, old version keeps serving: {e}");
                        AdminResponse::Error {
                            message: format!("reload refused, old version keeps serving: {e}"),
                        }
                    }
                },
                Ok(Some(Err(e))) => AdminResponse::Error {
                    message: format!("bad request: {e}"),
                },
                Ok(None) | Err(_) => return,
            };
            let _ = write_json(&mut stream, &resp).await;
        });
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect to admin socket {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("admin socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("admin socket sent an unreadable reply: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("{0}")]
    Refused(String),
}

/// One request to a running daemon.
pub fn request(socket: &Path, req: &AdminRequest) -> Result<Vec<PluginInfo>, ClientError> {
    let mut stream =
        std::os::unix::net::UnixStream::connect(socket).map_err(|source| ClientError::Connect {
            path: socket.display().to_string(),
            source,
        })?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reply = String::new();
    std::io::BufReader::new(stream).read_line(&mut reply)?;
    match serde_json::from_str(&reply)? {
        AdminResponse::Ok { plugins } => Ok(plugins),
        AdminResponse::Error { message } => Err(ClientError::Refused(message)),
    }
}
