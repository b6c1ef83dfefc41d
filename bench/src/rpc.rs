//! Small RPC (64-byte body) at 1, 16 and 256 calls in flight on one connection: quicproquo
//! through the generated dispatch and client, a raw quinn echo with the same frame layout,
//! and tonic unary (HTTP/2) with and without TLS.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use qpq_runtime::{ClientOptions, ServerOptions, TlsIdentity};

use crate::services::{self, GrpcTls, grpc, qpqgen};
use crate::stats::{Sample, fmt_latency, table, thread_cpu};

const BODY: usize = 64;
const IN_FLIGHT: [usize; 3] = [1, 16, 256];

/// Runs `in_flight` loops of `call` for `duration` on the current (client) runtime, and
/// counts the CPU time of the thread named `server` meanwhile.
pub(crate) async fn measure<C, F>(
    server: &str,
    in_flight: usize,
    duration: Duration,
    call: C,
) -> Sample
where
    C: Fn() -> F + Clone + 'static,
    F: Future<Output = ()> + 'static,
{
    // Warm up the connection and the code paths.
    for _ in 0..50 {
        call().await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let cpu_before = thread_cpu(server);
    let started = Instant::now();
    let local = tokio::task::LocalSet::new();
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let call = call.clone();
        let stop = stop.clone();
        tasks.push(local.spawn_local(async move {
            let mut latencies = Vec::with_capacity(4096);
            while !stop.load(Ordering::Relaxed) {
                let begun = Instant::now();
                call().await;
                latencies.push(begun.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    local
        .run_until(async {
            tokio::time::sleep(duration).await;
            stop.store(true, Ordering::Relaxed);
            for task in tasks {
                latencies.extend(task.await.expect("bench task"));
            }
        })
        .await;
    let elapsed = started.elapsed();
    let server_cpu = cpu_before.and_then(|before| Some(thread_cpu(server)?.saturating_sub(before)));
    Sample {
        ops: latencies.len() as u64,
        elapsed,
        latencies,
        server_cpu,
    }
}

/// Runs `body` on a fresh thread with a current-thread runtime (the client side).
pub(crate) fn on_client_thread<T: Send + 'static>(
    body: impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = T>>> + Send + 'static,
) -> T {
    std::thread::Builder::new()
        .name("bench-client".into())
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("client runtime")
                .block_on(body())
        })
        .expect("client thread")
        .join()
        .expect("client thread")
}

fn row(name: &str, in_flight: usize, s: &mut Sample, base: &mut Sample) -> Vec<String> {
    let p50 = s.percentile(0.5);
    let base_p50 = base.percentile(0.5);
    let cpu = |s: &Sample| s.server_cpu_per_op().map(|d| d.as_secs_f64() * 1e6);
    vec![
        name.to_owned(),
        in_flight.to_string(),
        format!("{:.0}", s.per_second()),
        format!("{} / {}", fmt_latency(p50), fmt_latency(s.percentile(0.99))),
        format!("{:.2}x", s.per_second() / base.per_second()),
        format!("{:.2}x", p50.as_secs_f64() / base_p50.as_secs_f64()),
        cpu(s).map_or("-".into(), |us| format!("{us:.1} µs")),
        match (cpu(s), cpu(base)) {
            (Some(us), Some(base_us)) if base_us > 0.0 => format!("{:.2}x", us / base_us),
            _ => "-".into(),
        },
    ]
}

/// Prints the small-RPC table.
pub(crate) fn run(duration: Duration) -> anyhow::Result<()> {
    println!(
        "## Small RPC ({BODY}-byte body, one connection; server and client each on one core)\n"
    );
    let identity = TlsIdentity::generate(&["localhost"])?;
    let qpq_addr = services::start_qpq(identity.clone(), ServerOptions::default());
    let raw_addr = services::start_raw_quinn(identity.clone());
    let grpc_tls = GrpcTls::generate();
    let tonic_plain = services::start_tonic(None);
    let tonic_tls = services::start_tonic(Some(&grpc_tls));
    let cert = identity.cert.clone();

    let mut rows = Vec::new();
    let mut summary = Vec::new();
    for in_flight in IN_FLIGHT {
        let cert = cert.clone();
        let identity = identity.clone();
        let grpc_ca = GrpcTls {
            ca_pem: grpc_tls.ca_pem.clone(),
            cert_pem: String::new(),
            key_pem: String::new(),
        };
        let samples = on_client_thread(move || {
            Box::pin(async move {
                let body = Bytes::from(vec![0x42u8; BODY]);
                // Raw quinn: the floor.
                let raw = services::raw_quinn_client(raw_addr, &identity).await;
                let raw_body = body.clone();
                let raw_sample = measure("srv-raw", in_flight, duration, move || {
                    let (raw, body) = (raw.clone(), raw_body.clone());
                    async move {
                        let echoed = services::raw_quinn_call(&raw, &body).await;
                        assert_eq!(echoed.len(), BODY);
                    }
                })
                .await;
                // quicproquo: generated client → runtime → generated dispatch → handler.
                let connection = qpq_runtime::connect(qpq_addr, &ClientOptions::pinned(cert))
                    .await
                    .expect("qpq connects");
                let client = qpqgen::BenchClient::new(connection);
                let qpq_body = body.clone();
                let qpq_sample = measure("srv-qpq", in_flight, duration, move || {
                    let (client, body) = (client.clone(), qpq_body.clone());
                    async move {
                        let echoed = client
                            .echo(qpqgen::proto::EchoMsg { data: body })
                            .await
                            .expect("qpq echo");
                        assert_eq!(echoed.data.len(), BODY);
                    }
                })
                .await;
                // tonic without and with TLS.
                let mut grpc_samples = Vec::new();
                for (addr, tls, server) in [
                    (tonic_plain, None, "srv-tonic"),
                    (tonic_tls, Some(&grpc_ca), "srv-tonic-tls"),
                ] {
                    let client = services::tonic_client(addr, tls).await;
                    let grpc_body = body.clone();
                    grpc_samples.push(
                        measure(server, in_flight, duration, move || {
                            let (mut client, body) = (client.clone(), grpc_body.clone());
                            async move {
                                let echoed = client
                                    .echo(grpc::EchoMsg { data: body })
                                    .await
                                    .expect("tonic echo")
                                    .into_inner();
                                assert_eq!(echoed.data.len(), BODY);
                            }
                        })
                        .await,
                    );
                }
                let tonic_tls_sample = grpc_samples.pop().unwrap();
                let tonic_plain_sample = grpc_samples.pop().unwrap();
                if std::env::var_os("QPQ_BENCH_SPLIT").is_some() {
                    // Which side costs what: each client against the other server.
                    let mut encoded = vec![0x0a, BODY as u8];
                    encoded.extend_from_slice(&body);
                    let raw_to_qpq = services::raw_quinn_client(qpq_addr, &identity).await;
                    let enc = Bytes::from(encoded);
                    let mut s1 = measure("srv-qpq", in_flight, duration, move || {
                        let (c, b) = (raw_to_qpq.clone(), enc.clone());
                        async move {
                            services::raw_quinn_call(&c, &b).await;
                        }
                    })
                    .await;
                    let qpq_to_raw = qpq_runtime::connect(
                        raw_addr,
                        &ClientOptions::pinned(identity.cert.clone()),
                    )
                    .await
                    .unwrap();
                    let b2 = body.clone();
                    let mut s2 = measure("srv-raw", in_flight, duration, move || {
                        let (c, b) = (qpq_to_raw.clone(), b2.clone());
                        async move {
                            c.call(1, &b, Duration::from_secs(5)).await.unwrap();
                        }
                    })
                    .await;
                    println!(
                        "split {in_flight}: raw client→qpq server {:.0}/s p50 {}; qpq client→raw server {:.0}/s p50 {}",
                        s1.per_second(),
                        fmt_latency(s1.percentile(0.5)),
                        s2.per_second(),
                        fmt_latency(s2.percentile(0.5))
                    );
                }
                (raw_sample, qpq_sample, tonic_plain_sample, tonic_tls_sample)
            })
        });
        let (mut raw, mut qpq, mut plain, mut tls) = samples;
        let base = raw.per_second();
        let base_p50 = raw.percentile(0.5);
        let mut base_sample = raw.clone();
        rows.push(row("raw quinn", in_flight, &mut raw, &mut base_sample));
        rows.push(row("quicproquo", in_flight, &mut qpq, &mut base_sample));
        rows.push(row("tonic (h2c)", in_flight, &mut plain, &mut base_sample));
        rows.push(row("tonic (TLS)", in_flight, &mut tls, &mut base_sample));
        let cpu_ratio = match (qpq.server_cpu_per_op(), raw.server_cpu_per_op()) {
            (Some(q), Some(r)) if !r.is_zero() => {
                format!(
                    "; server CPU per call {:.2}x raw quinn",
                    q.as_secs_f64() / r.as_secs_f64()
                )
            }
            _ => String::new(),
        };
        summary.push(format!(
            "- {in_flight} in flight: quicproquo {:.2}x raw quinn, {:.1}x tonic (TLS), {:.1}x tonic (h2c); p50 {:.2}x raw quinn{cpu_ratio}",
            qpq.per_second() / base,
            qpq.per_second() / tls.per_second(),
            qpq.per_second() / plain.per_second(),
            qpq.percentile(0.5).as_secs_f64() / base_p50.as_secs_f64()
        ));
    }
    table(
        &[
            "system",
            "in flight",
            "calls/s",
            "p50 / p99",
            "calls/s vs raw quinn",
            "p50 vs raw quinn",
            "server CPU/call",
            "CPU vs raw quinn",
        ],
        &rows,
    );
    for line in summary {
        println!("{line}");
    }
    println!(
        "\nTargets: at 256 in flight ≥ 0.8x raw quinn and ≥ 5x tonic; at 1 in flight p50 ≤ 1.1x raw quinn.\n"
    );
    Ok(())
}
