//! Malformed input over real QUIC against the real `qpq-server` binary: for every method of
//! `qpq_schema::METHODS`, 1,000 bodies made by mutating a valid request (bit flips,
//! truncation, extension, random fields and varints, lying lengths, random bytes), sent raw
//! with `Connection::call`. Most mutations keep the session token intact so authentication
//! passes and the handler's own checks are reached.
//!
//! Every call must be answered with a proper status, never Internal, never a hang; a body
//! that does not decode as the method's request must be BadRequest (so no handler saw it);
//! the server keeps serving, and its resident memory stays bounded.
//!
//! Rate limits are off here (`--rate-limit all=off`): with them on, most valid-looking
//! bodies would stop at RateLimited instead of reaching the handlers under test.

mod common;
mod seeds;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{ServerProcess, rss_kib};
use qpq_client::{IdentityKey, QpqClient};
use qpq_runtime::{AuthLevel, MethodDescriptor, RpcError, StatusCode};
use qpq_schema::{METHODS, MethodId, proto};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use seeds::SeedCtx;

const BODIES_PER_METHOD: usize = 1_000;
const IN_FLIGHT: usize = 64;
const PASSWORD: &[u8] = b"malformed test password";
/// A long poll a mutated FetchWait may legitimately ask for is cut short by the client here.
const FETCH_WAIT_PATIENCE: Duration = Duration::from_secs(2);

/// A varint of `value`, or an overlong / unterminated one.
fn varint(rng: &mut StdRng, out: &mut Vec<u8>) {
    match rng.gen_range(0..4) {
        // Ten continuation bytes: longer than any valid varint.
        0 => out.extend(std::iter::repeat_n(0xff, rng.gen_range(1..=11))),
        1 => {
            let mut v: u64 = rng.r#gen();
            loop {
                let byte = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    out.push(byte);
                    break;
                }
                out.push(byte | 0x80);
            }
        }
        2 => out.push(rng.gen_range(0..0x80)),
        _ => {
            let v: u64 = rng.gen_range(0..1 << 20);
            prost::encoding::encode_varint(v, out);
        }
    }
}

/// A random field: a random tag (field 1-40, any wire type, valid or not) and a payload
/// that may lie about its length.
fn random_field(rng: &mut StdRng, out: &mut Vec<u8>) {
    let field: u64 = rng.gen_range(0..42);
    let wire: u64 = rng.gen_range(0..8);
    prost::encoding::encode_varint(field << 3 | wire, out);
    match wire {
        0 => varint(rng, out),
        1 => out.extend((0..8).map(|_| rng.r#gen::<u8>())),
        2 => {
            let len = rng.gen_range(0..64usize);
            let declared = if rng.gen_bool(0.8) {
                len as u64
            } else {
                rng.gen_range(0..1 << 24)
            };
            prost::encoding::encode_varint(declared, out);
            out.extend((0..len).map(|_| rng.r#gen::<u8>()));
        }
        5 => out.extend((0..4).map(|_| rng.r#gen::<u8>())),
        _ => {}
    }
}

/// A well-formed field (field 1-12, any valid wire type, correct length): it replaces or
/// adds a value of the request when its type fits, and fails decoding when it does not.
fn valid_field(rng: &mut StdRng, out: &mut Vec<u8>) {
    let field: u64 = rng.gen_range(1..=12);
    match rng.gen_range(0..5) {
        0 | 1 => {
            prost::encoding::encode_varint(field << 3 | 2, out);
            let len = [0, 1, 8, 16, 31, 32, 33, 64, 1184, 2000][rng.gen_range(0..10)];
            prost::encoding::encode_varint(len as u64, out);
            if rng.gen_bool(0.5) {
                out.extend((0..len).map(|_| rng.gen_range(b'a'..=b'z')));
            } else {
                out.extend((0..len).map(|_| rng.r#gen::<u8>()));
            }
        }
        2 | 3 => {
            prost::encoding::encode_varint(field << 3, out);
            let value =
                [0, 1, 2, 3, u64::from(u32::MAX), u64::MAX, rng.r#gen()][rng.gen_range(0..7)];
            prost::encoding::encode_varint(value, out);
        }
        _ => {
            prost::encoding::encode_varint(field << 3 | 5, out);
            out.extend((0..4).map(|_| rng.r#gen::<u8>()));
        }
    }
}

/// One to three mutations of `seed`; the first `keep` bytes (the session token) stay
/// intact unless the mutation is one of the few that touch everything.
fn mutate(seed: &[u8], keep: usize, rng: &mut StdRng) -> Vec<u8> {
    let mut body = seed.to_vec();
    for _ in 0..rng.gen_range(1..=3) {
        let keep = keep.min(body.len());
        let tail = body.len() - keep;
        match rng.gen_range(0..14) {
            // Flip bits in the tail.
            0 | 1 if tail > 0 => {
                for _ in 0..rng.gen_range(1..=4) {
                    let at = keep + rng.gen_range(0..tail);
                    body[at] ^= 1 << rng.gen_range(0..8);
                }
            }
            // Overwrite a byte with a varint-breaking value.
            2 if tail > 0 => {
                let at = keep + rng.gen_range(0..tail);
                body[at] = [0x00, 0x7f, 0x80, 0xff][rng.gen_range(0..4)];
            }
            // Truncate.
            3 if tail > 0 => body.truncate(keep + rng.gen_range(0..tail)),
            // Extend with random bytes.
            4 => {
                let extra = rng.gen_range(1..=64);
                body.extend((0..extra).map(|_| rng.r#gen::<u8>()));
            }
            // Append a well-formed field: new values for the request's own fields.
            5..=8 => valid_field(rng, &mut body),
            // Append a random, possibly malformed field (lying lengths, bad wire types).
            9 => random_field(rng, &mut body),
            // Insert a random varint at a random place of the tail.
            10 => {
                let at = keep + rng.gen_range(0..=tail);
                let mut v = Vec::new();
                varint(rng, &mut v);
                body.splice(at..at, v);
            }
            // Duplicate a slice of the tail at its end (repeated fields, duplicate scalars).
            11 if tail > 0 => {
                let from = keep + rng.gen_range(0..tail);
                let to = from + rng.gen_range(0..=(body.len() - from));
                let slice = body[from..to].to_vec();
                body.extend(slice);
            }
            // Anywhere, token included: change a byte.
            12 if !body.is_empty() => {
                let at = rng.gen_range(0..body.len());
                body[at] = rng.r#gen();
            }
            // Entirely random bytes.
            13 => {
                let len = rng.gen_range(0..=seed.len() * 2 + 16);
                body = vec![0; len];
                rng.fill_bytes(&mut body);
            }
            _ => valid_field(rng, &mut body),
        }
    }
    body
}

#[derive(Default)]
struct Tally {
    by_status: BTreeMap<&'static str, u64>,
    undecodable: u64,
    parked: u64,
    reconnects: u64,
}

/// The statuses a method may answer a decodable but hostile body with: its own errors.
fn acceptable(code: StatusCode, message: &str) -> bool {
    match code {
        StatusCode::Ok
        | StatusCode::BadRequest
        | StatusCode::Unauthorized
        | StatusCode::Forbidden
        | StatusCode::NotFound
        | StatusCode::Conflict
        | StatusCode::RateLimited => true,
        // Federation is a method's proper Unavailable; the store failing is not.
        StatusCode::Unavailable => !message.contains("storage"),
        _ => false,
    }
}

struct Caller {
    cx: SeedCtx,
    client: QpqClient,
}

async fn connect(server: &ServerProcess, cert: &std::path::Path) -> QpqClient {
    server.client(cert).await
}

async fn caller(
    server: &ServerProcess,
    cert: &std::path::Path,
    name: String,
    other: &Other,
) -> Caller {
    let client = connect(server, cert).await;
    let identity = IdentityKey::generate();
    qpq_client::register(&client, &name, PASSWORD, &identity.public())
        .await
        .unwrap();
    let session = login(&client, &name).await;
    let channel = client
        .create_channel(proto::CreateChannelRequest {
            session_token: session.token.clone(),
            name: format!("{name}'s room"),
            initial_members: vec![proto::UserRef {
                target: Some(proto::user_ref::Target::IdentityKey(
                    Bytes::copy_from_slice(&other.key),
                )),
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .channel_id;
    let mut device = vec![0u8; 16];
    rand::thread_rng().fill_bytes(&mut device);
    Caller {
        cx: SeedCtx {
            token: session.token,
            username: name,
            me: identity.public(),
            other: other.key,
            other_name: other.name.clone(),
            channel,
            device: Bytes::from(device),
        },
        client,
    }
}

/// Logs in, waiting out the failed-login limiter: logins in progress count against the
/// address until they succeed, and this test starts dozens at once from one address.
async fn login(client: &QpqClient, name: &str) -> qpq_client::Login {
    loop {
        match qpq_client::login(client, name, PASSWORD, None).await {
            Ok(session) => return session,
            Err(error) => {
                let wait = match &error {
                    qpq_client::ClientError::Rpc(RpcError::Status(status))
                        if status.code() == StatusCode::RateLimited =>
                    {
                        status.retry_after_ms().unwrap_or(100)
                    }
                    _ => panic!("login of {name}: {error}"),
                };
                tokio::time::sleep(Duration::from_millis(wait.into())).await;
            }
        }
    }
}

struct Other {
    name: String,
    key: [u8; 32],
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_answers_hostile_bodies_with_a_proper_status() {
    let dir = tempfile::tempdir().unwrap();
    let cert = ServerProcess::cert_path(dir.path());
    let server = Arc::new(ServerProcess::spawn(
        dir.path(),
        &["--rate-limit", "all=off"],
    ));
    let pid = server.child.id();

    let setup = Instant::now();
    let other = {
        let client = connect(&server, &cert).await;
        let identity = IdentityKey::generate();
        qpq_client::register(&client, "other", PASSWORD, &identity.public())
            .await
            .unwrap();
        Other {
            name: "other".into(),
            key: identity.public(),
        }
    };
    let other = Arc::new(other);
    // One user and one connection per method, so that what one method's bodies do (delete
    // the account, revoke a device, ban) cannot change what another method's see.
    let mut tasks = Vec::new();
    for (i, method) in METHODS.iter().enumerate() {
        let (server, cert, other) = (server.clone(), cert.clone(), other.clone());
        tasks.push(tokio::spawn(async move {
            let name = format!("m{i}-{}", method.name.to_lowercase());
            caller(&server, &cert, name, &other).await
        }));
    }
    let mut callers = Vec::new();
    for task in tasks {
        callers.push(task.await.unwrap());
    }
    println!(
        "setup: {} users over OPAQUE in {:.1} s",
        callers.len() + 1,
        setup.elapsed().as_secs_f64()
    );

    // Memory sampled in the background; the figure before is taken after setup and a
    // warm-up round of valid calls, so the caches it fills are not counted as growth.
    for (method, caller) in METHODS.iter().zip(&callers) {
        if matches!(method.name, "DeleteAccount" | "RevokeKey" | "RevokeDevice") {
            // Valid, these would end the caller before its hostile round.
            continue;
        }
        let body = seeds::seed(method, &caller.cx);
        let _ = caller
            .client
            .connection()
            .call(method.id, &body, Duration::from_secs(5))
            .await;
    }
    let rss_before = rss_kib(pid);
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(
        std::env::var("QPQ_MALFORMED_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| rand::thread_rng().r#gen()),
    );
    let mut tallies: Vec<(&'static MethodDescriptor, Tally)> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut total = 0u64;
    for (method, caller) in METHODS.iter().zip(callers.iter_mut()) {
        let id = MethodId::try_from(method.id).unwrap();
        let seed = seeds::seed(method, &caller.cx);
        let keep = seeds::token_prefix_len(method, &caller.cx);
        let bodies: Vec<Vec<u8>> = (0..BODIES_PER_METHOD)
            .map(|_| mutate(&seed, keep, &mut rng))
            .collect();
        let mut tally = Tally::default();
        let patience = if method.name == "FetchWait" {
            FETCH_WAIT_PATIENCE
        } else {
            method.timeout() + Duration::from_secs(5)
        };
        let mut pending = bodies.into_iter().enumerate().peekable();
        while pending.peek().is_some() {
            // A batch in flight at once on the method's connection.
            let mut batch = Vec::new();
            for (n, body) in pending.by_ref().take(IN_FLIGHT) {
                let connection = caller.client.connection().clone();
                batch.push(tokio::spawn(async move {
                    let result = connection.call(method.id, &body, patience).await;
                    (n, body, result)
                }));
            }
            let mut reconnect = false;
            for task in batch {
                let (n, body, result) = task.await.unwrap();
                total += 1;
                let decodable = id.check_request(&body).is_ok();
                if !decodable {
                    tally.undecodable += 1;
                }
                let what = format!(
                    "{} body #{n} ({} bytes, decodable: {decodable})",
                    method.name,
                    body.len()
                );
                match result {
                    Ok(_) if decodable => *tally.by_status.entry("Ok").or_default() += 1,
                    Ok(_) => failures.push(format!("{what}: answered Ok to an undecodable body")),
                    Err(RpcError::Status(status)) => {
                        *tally.by_status.entry(status.code().name()).or_default() += 1;
                        if !decodable && status.code() != StatusCode::BadRequest {
                            failures.push(format!("{what}: undecodable but answered {status}"));
                        } else if !acceptable(status.code(), status.message()) {
                            failures.push(format!("{what}: {status}"));
                        }
                    }
                    Err(RpcError::Timeout(_)) if method.name == "FetchWait" && decodable => {
                        // A valid long poll: the server may hold it up to its wait.
                        tally.parked += 1;
                    }
                    Err(RpcError::Transport(error))
                        if matches!(method.name, "DeleteAccount" | "RevokeDevice") =>
                    {
                        // Deleting the account or revoking the device closes the caller's
                        // connection: expected; reconnect and go on.
                        reconnect = true;
                        let _ = error;
                    }
                    Err(other) => failures.push(format!("{what}: {other}")),
                }
            }
            if reconnect || caller.client.connection().close_reason().is_some() {
                tally.reconnects += 1;
                caller.client = connect(&server, &cert).await;
            }
        }
        tallies.push((method, tally));
    }
    let elapsed = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();

    // The server still serves a normal call.
    let after_client = connect(&server, &cert).await;
    after_client.health(proto::HealthRequest {}).await.unwrap();
    let rss_after = rss_kib(pid);
    let peak = peak.load(Ordering::Relaxed);

    println!("\n{:<24} {:>5} {:>6}  statuses", "method", "auth", "undec");
    for (method, tally) in &tallies {
        let statuses: Vec<String> = tally
            .by_status
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let mut extra = String::new();
        if tally.parked > 0 {
            extra.push_str(&format!(
                ", {} valid long polls cut short by the client",
                tally.parked
            ));
        }
        if tally.reconnects > 0 {
            extra.push_str(&format!(", {} reconnects", tally.reconnects));
        }
        println!(
            "{:<24} {:>5} {:>6}  {}{extra}",
            method.name,
            auth_name(method.auth),
            tally.undecodable,
            statuses.join(", ")
        );
    }
    println!(
        "\n{total} hostile calls over {} methods in {:.1} s: {:.0} calls/s",
        tallies.len(),
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    println!(
        "server RSS: before {} MiB, peak {} MiB, after {} MiB",
        rss_before / 1024,
        peak / 1024,
        rss_after / 1024
    );
    assert!(
        failures.is_empty(),
        "{} improper answers, first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
    assert_eq!(total, (METHODS.len() * BODIES_PER_METHOD) as u64);
    assert!(
        tallies
            .iter()
            .all(|(_, t)| !t.by_status.contains_key("Internal")),
        "no Internal"
    );
    // Bounded: what 50k hostile calls leave behind is small next to the server itself.
    assert!(
        peak < rss_before + 64 * 1024,
        "server memory grew from {rss_before} KiB to a peak of {peak} KiB"
    );
}

fn auth_name(auth: AuthLevel) -> &'static str {
    match auth {
        AuthLevel::None => "none",
        AuthLevel::Session => "sess",
        AuthLevel::Admin => "admin",
        AuthLevel::Federation => "fed",
    }
}

#[test]
fn mutations_are_mostly_undecodable_and_sometimes_not() {
    // The mutator must produce both kinds, or the test above proves less than it says.
    let mut rng = StdRng::seed_from_u64(7);
    let cx = SeedCtx::placeholder();
    let method = METHODS.iter().find(|m| m.name == "Enqueue").unwrap();
    let id = MethodId::try_from(method.id).unwrap();
    let seed = seeds::seed(method, &cx);
    let decodable = (0..1000)
        .filter(|_| id.check_request(&mutate(&seed, 34, &mut rng)).is_ok())
        .count();
    assert!(
        (100..900).contains(&decodable),
        "{decodable} of 1000 decodable"
    );
}

/// A new method must come with a seed of its own: a generic body would mostly stop at the
/// decoder, and `every_method_answers_hostile_bodies_with_a_proper_status` would count a
/// handler it never reached.
#[test]
fn every_method_has_a_malformed_input_seed() {
    let cx = SeedCtx::placeholder();
    let missing: Vec<String> = seeds::unseeded(&METHODS, &cx)
        .into_iter()
        .map(seeds::missing)
        .collect();
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
