//! f) the gRPC sockets' `:authority` adapter (`--grpc` alone): what `grpc::Conn` costs a unary
//! call, in this process. One registration service is served twice, on a socket with the plain
//! stream under h2 and on one through `grpc::Incoming`, as the daemon serves it. The same bare
//! HTTP/2 client calls GetInfo on three connections in alternating blocks:
//! - the plain stream with `localhost`, the baseline;
//! - the adapter with `localhost`: what a tonic client or kubelet's CSI client pays, every block
//!   decoded and passed on unchanged;
//! - the adapter with the socket's path, as crictl and grpc-go send it: every block re-encoded.
//!   The plain stream cannot serve that at all.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use wasmgate_daemon::csi::registration::Registration;
use wasmgate_daemon::grpc::Incoming;
use wasmgate_daemon::trace::Trace;
use wasmgate_proto::pluginregistration::registration_server::RegistrationServer;
use wasmgate_tests::h2raw::RawH2;
use wasmgate_tests::unique;

use super::{Sizes, Stats, loadavg, ratio};

const PATH: &str = "/pluginregistration.Registration/GetInfo";
/// Calls per side before switching to the next, so drift in the machine's load hits all sides.
const BLOCK: usize = 100;

pub fn bench(sizes: Sizes) -> Result<()> {
    println!("== f) gRPC :authority adapter: a unary call with and without grpc::Conn ==");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(sizes.cri_calls))
}

async fn run(calls: usize) -> Result<()> {
    let dir = std::env::temp_dir().join(unique("wasmgate-bench-grpc-"));
    std::fs::create_dir_all(&dir)?;
    let trace = Arc::new(Trace::default());
    let reg = Arc::new(Registration::new(
        "bench.csi.wasmgate.io".into(),
        dir.join("csi.sock"),
        trace.clone(),
    ));
    let plain = dir.join("plain.sock");
    let adapted = dir.join("adapted.sock");
    let listener = UnixListener::bind(&plain)?;
    let service = RegistrationServer::from_arc(reg.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );
    let incoming = Incoming::new(UnixListener::bind(&adapted)?, "registration", &adapted, trace);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RegistrationServer::from_arc(reg))
            .serve_with_incoming(incoming),
    );

    let path = adapted.display().to_string();
    let mut sides = [
        Side::connect("plain stream, localhost", &plain, b"localhost".to_vec()).await,
        Side::connect("grpc::Conn, localhost (passed on)", &adapted, b"localhost".to_vec()).await,
        Side::connect("grpc::Conn, socket path (re-encoded)", &adapted, path.into_bytes()).await,
    ];
    for s in sides.iter_mut() {
        for _ in 0..BLOCK {
            s.call().await?;
        }
        s.samples.clear();
    }
    let started = Instant::now();
    for _ in 0..calls.div_ceil(BLOCK) {
        for s in sides.iter_mut() {
            for _ in 0..BLOCK {
                s.call().await?;
            }
        }
    }
    let base = Stats::of(&sides[0].samples);
    println!(
        "{} GetInfo calls a side in {:.1} s, load {}",
        sides[0].samples.len(),
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    for s in &sides {
        let st = Stats::of(&s.samples);
        println!(
            "  {:<40} p50 {:>7.1} µs  p99 {:>7.1} µs  mean {:>7.1} µs  p50 x{:.2} of the plain stream's",
            s.name,
            st.median_us(),
            st.p99_us(),
            st.mean_us(),
            ratio(st.median, base.median),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

struct Side {
    name: &'static str,
    client: RawH2,
    authority: Vec<u8>,
    samples: Vec<Duration>,
}

impl Side {
    async fn connect(name: &'static str, socket: &Path, authority: Vec<u8>) -> Self {
        Self {
            name,
            client: RawH2::connect(socket).await,
            authority,
            samples: Vec::new(),
        }
    }

    async fn call(&mut self) -> Result<()> {
        let t = Instant::now();
        let out = self.client.call(PATH, &self.authority, &[], &[]).await;
        self.samples.push(t.elapsed());
        ensure!(
            out.grpc_status() == Some(0),
            "{}: GetInfo failed: {out:?}",
            self.name
        );
        Ok(())
    }
}
