//! The CNI socket: one request line in, one response line out, per connection.

use std::sync::Arc;

use tokio::io::BufReader;
use tokio::net::UnixListener;
use wasmgate_cni::error::{CniError, code};
use wasmgate_cni::wire::{Request, Response};

use super::CniService;
use crate::socket::{AcceptBackoff, accept, read_json, write_json};

/// The shim writes its whole request at once; anything slower is not a shim.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub async fn serve(listener: UnixListener, svc: Arc<CniService>) {
    let mut backoff = AcceptBackoff::default();
    loop {
        let stream = accept(&listener, &mut backoff, "cni").await;
        let svc = svc.clone();
        tokio::spawn(async move {
            let mut stream = BufReader::new(stream);
            // A peer that connects and never sends must not hold a task forever.
            let request =
                match tokio::time::timeout(READ_TIMEOUT, read_json::<Request>(&mut stream)).await {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::warn!("cni client sent no request within {READ_TIMEOUT:?}");
                        return;
                    }
                };
            let response = match request {
                Ok(Some(Ok(req))) => svc.handle(req).await,
                Ok(Some(Err(e))) => Response::Err {
                    error: CniError::new(code::DECODE, format!("decode request: {e}"), ""),
                },
                Ok(None) => return,
                Err(e) => Response::Err {
                    error: CniError::new(code::IO, format!("read request: {e}"), ""),
                },
            };
            if let Err(e) = write_json(&mut stream, &response).await {
                // The shim went away (killed runtime); the work is done and recorded regardless.
                tracing::warn!("cni reply lost: {e}");
            }
        });
    }
}
