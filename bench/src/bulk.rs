//! Bulk transfer: 64 KiB and 16 MiB bodies up and down, quicproquo against tonic over TLS,
//! on one connection, one transfer at a time. Also the messenger's real blob path
//! (UploadBlob in 4 MiB chunks, durably stored, and DownloadBlob), for reference.

use std::time::{Duration, Instant};

use bytes::Bytes;
use qpq_runtime::{ClientOptions, ServerOptions, TlsIdentity};

use crate::rpc::on_client_thread;
use crate::services::{self, GrpcTls, grpc, qpqgen};
use crate::stats::table;

/// The most a single request carries (the messenger's blob chunk size).
const CHUNK: usize = 4 << 20;

fn mbps(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / 1e6
}

/// Prints the bulk table.
pub(crate) fn run(duration: Duration) -> anyhow::Result<()> {
    println!(
        "## Bulk transfer (one connection, one transfer at a time, chunks of at most 4 MiB)\n"
    );
    let identity = TlsIdentity::generate(&["localhost"])?;
    let qpq_addr = services::start_qpq(identity.clone(), ServerOptions::default());
    let grpc_tls = GrpcTls::generate();
    let tonic_addr = services::start_tonic(Some(&grpc_tls));
    let ca_pem = grpc_tls.ca_pem.clone();
    let cert = identity.cert.clone();
    let rows = on_client_thread(move || {
        Box::pin(async move {
            let grpc_ca = GrpcTls {
                ca_pem,
                cert_pem: String::new(),
                key_pem: String::new(),
            };
            let connection = qpq_runtime::connect(qpq_addr, &ClientOptions::pinned(cert))
                .await
                .expect("qpq connects");
            let qpq = qpqgen::BenchClient::new(connection);
            let mut tonic = services::tonic_client(tonic_addr, Some(&grpc_ca)).await;
            let mut rows = Vec::new();
            for size in [64usize << 10, 16 << 20] {
                let payload = Bytes::from(vec![0x33u8; size]);
                let mut results = Vec::new();
                for system in ["quicproquo", "tonic (TLS)"] {
                    let (mut up, mut down) = ((0u64, Duration::ZERO), (0u64, Duration::ZERO));
                    let deadline = Instant::now() + duration;
                    while Instant::now() < deadline || up.0 == 0 {
                        let begun = Instant::now();
                        for chunk in payload.chunks(CHUNK) {
                            let chunk = payload.slice_ref(chunk);
                            if system == "quicproquo" {
                                qpq.put(qpqgen::proto::PutRequest { data: chunk })
                                    .await
                                    .expect("qpq put");
                            } else {
                                tonic
                                    .put(grpc::PutRequest { data: chunk })
                                    .await
                                    .expect("tonic put");
                            }
                        }
                        up = (up.0 + size as u64, up.1 + begun.elapsed());
                        let begun = Instant::now();
                        let mut left = size;
                        while left > 0 {
                            let want = left.min(CHUNK) as u64;
                            let got = if system == "quicproquo" {
                                qpq.get(qpqgen::proto::GetRequest { len: want })
                                    .await
                                    .expect("qpq get")
                                    .data
                                    .len()
                            } else {
                                tonic
                                    .get(grpc::GetRequest { len: want })
                                    .await
                                    .expect("tonic get")
                                    .into_inner()
                                    .data
                                    .len()
                            };
                            left -= got;
                        }
                        down = (down.0 + size as u64, down.1 + begun.elapsed());
                    }
                    results.push((mbps(up.0, up.1), mbps(down.0, down.1)));
                }
                let (q, t) = (results[0], results[1]);
                let label = if size < 1 << 20 {
                    format!("{} KiB", size >> 10)
                } else {
                    format!("{} MiB", size >> 20)
                };
                rows.push(vec![
                    label,
                    format!("{:.0}", q.0),
                    format!("{:.0}", t.0),
                    format!("{:.2}x", q.0 / t.0),
                    format!("{:.0}", q.1),
                    format!("{:.0}", t.1),
                    format!("{:.2}x", q.1 / t.1),
                ]);
            }
            rows
        })
    });
    table(
        &[
            "size",
            "qpq up MB/s",
            "tonic TLS up MB/s",
            "up ratio",
            "qpq down MB/s",
            "tonic TLS down MB/s",
            "down ratio",
        ],
        &rows,
    );
    println!("Target: quicproquo not slower than tonic over TLS (ratio ≥ 1.00x).\n");
    Ok(())
}
