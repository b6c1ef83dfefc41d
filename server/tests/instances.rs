//! Several instances of one domain on loopback, sharing one PostgreSQL database (the test
//! process's throw-away cluster) and one `nats-server` (started here): a wait parked on one
//! instance is answered by an Enqueue on another, and the push reaches its connection; with
//! NATS stopped the wait is still answered within the re-check interval; a ban or a device
//! revocation through one instance ends a session parked on another within a second.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{PASSWORD, TestServer, User};
use qpq_client::QpqClient;
use qpq_schema::{Event, proto};
use qpq_server::testing::{NatsServer, PgCluster};
use qpq_server::{BusChoice, Config, StoreChoice};

/// The instances of one domain, and the NATS server they share.
struct Domain {
    instances: Vec<TestServer>,
    nats: NatsServer,
}

/// `n` instances on a new database and a new NATS server, each re-checking parked waits every
/// `recheck_ms`; `None` (after a visible skip) when PostgreSQL or nats-server is missing.
async fn domain(test: &str, n: usize, recheck_ms: u64, tune: fn(&mut Config)) -> Option<Domain> {
    let cluster = match PgCluster::shared() {
        Ok(c) => c,
        Err(e) => {
            common::skip(test, &e);
            return None;
        }
    };
    let nats = match NatsServer::start() {
        Ok(n) => n,
        Err(e) => {
            common::skip(test, &e);
            return None;
        }
    };
    let store = StoreChoice::Postgres(cluster.postgres_url(&cluster.create_database()));
    let bus = BusChoice::Nats(nats.url());
    let configure = |c: &mut Config| {
        c.store = store.clone();
        c.bus = bus.clone();
        c.bus_recheck_ms = recheck_ms;
        tune(c);
    };
    let first = TestServer::start_with(configure).await;
    let mut instances = Vec::new();
    for _ in 1..n {
        instances.push(first.sibling(configure).await);
    }
    instances.insert(0, first);
    Some(Domain { instances, nats })
}

/// Logs `name` in on `server` (registered on any instance).
async fn login(server: &TestServer, user: &User, device: Option<[u8; 16]>) -> User {
    let client: QpqClient = server.client().await;
    let session = qpq_client::login(
        &client,
        &user.name,
        PASSWORD,
        device.as_ref().map(|d| &d[..]),
    )
    .await
    .expect("login on another instance");
    User {
        name: user.name.clone(),
        client,
        identity: qpq_client::IdentityKey::from_secret(&user.identity.secret()),
        session,
    }
}

fn wait(
    user: &User,
    timeout_ms: u32,
) -> impl Future<Output = Result<proto::FetchWaitResponse, qpq_runtime::RpcError>> + use<> {
    let client = user.client.clone();
    let token = user.token();
    async move {
        client
            .fetch_wait(proto::FetchWaitRequest {
                session_token: token,
                limit: 10,
                timeout_ms,
                peek: false,
                after_seq: 0,
            })
            .await
    }
}

fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[(samples.len() * 99).div_ceil(100) - 1]
}

#[tokio::test]
async fn a_wait_on_one_instance_is_answered_by_an_enqueue_on_another() {
    // Re-checks every 5 s: an answer within 50 ms came over the bus.
    let Some(d) = domain("instances::wake-up", 2, 5000, |_| {}).await else {
        return;
    };
    let (a, b) = (&d.instances[0], &d.instances[1]);
    let alice = a.user("alice").await;
    let bob = b.user("bob").await;
    let mut pushes = alice.client.events().unwrap();
    alice.peek().await;

    // The push of a message enqueued on B reaches alice's connection on A.
    let seq = bob.send(&alice, b"over the bus").await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(2), pushes.next())
        .await
        .expect("the push crosses instances")
        .unwrap()
        .unwrap();
    let Event::PushNewMessage(pushed) = event else {
        panic!("unexpected event {event:?}");
    };
    assert_eq!(pushed.seq, seq);
    assert_eq!(&pushed.payload[..], b"over the bus");
    drop(pushes);
    let drained = alice
        .client
        .fetch(proto::FetchRequest {
            session_token: alice.token(),
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(drained.messages.len(), 1);

    let mut latencies = Vec::new();
    for round in 0..1000u32 {
        let parked = tokio::spawn(wait(&alice, 10_000));
        tokio::time::sleep(Duration::from_millis(2)).await;
        let payload = round.to_be_bytes();
        bob.send(&alice, &payload).await.unwrap();
        let sent = Instant::now();
        let answer = parked.await.unwrap().expect("FetchWait answered");
        latencies.push(sent.elapsed());
        assert_eq!(answer.messages.len(), 1, "round {round}");
        assert_eq!(&answer.messages[0].payload[..], &payload);
    }
    let p99 = p99(latencies);
    eprintln!("cross-instance wake-up p99 over 1000: {p99:?}");
    assert!(p99 < Duration::from_millis(50), "p99 {p99:?}");
}

#[tokio::test]
async fn with_nats_stopped_a_wait_is_answered_within_the_recheck_interval() {
    let Some(d) = domain("instances::bus stopped", 2, 1000, |_| {}).await else {
        return;
    };
    let (a, b) = (&d.instances[0], &d.instances[1]);
    let alice = a.user("alice").await;
    let bob = b.user("bob").await;
    d.nats.stop().unwrap();
    let parked = tokio::spawn(wait(&alice, 20_000));
    tokio::time::sleep(Duration::from_millis(50)).await;
    bob.send(&alice, b"while the bus is down").await.unwrap();
    let sent = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(3), parked)
        .await
        .expect("answered by the re-check")
        .unwrap()
        .unwrap();
    assert_eq!(&answer.messages[0].payload[..], b"while the bus is down");
    let took = sent.elapsed();
    assert!(took < Duration::from_millis(1500), "took {took:?}");

    // NATS comes back: wake-ups cross instances again, faster than the re-check.
    d.nats.start_again().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let parked = tokio::spawn(wait(&alice, 20_000));
        tokio::time::sleep(Duration::from_millis(20)).await;
        bob.send(&alice, b"again").await.unwrap();
        let sent = Instant::now();
        parked.await.unwrap().unwrap();
        if sent.elapsed() < Duration::from_millis(200) {
            break;
        }
        assert!(Instant::now() < deadline, "the bus did not come back");
    }
}

#[tokio::test]
async fn a_ban_or_revocation_on_one_instance_ends_a_session_parked_on_another() {
    let Some(d) = domain("instances::revocation", 3, 5000, |c| {
        c.admins = vec!["ops".into()];
    })
    .await
    else {
        return;
    };
    let (a, b, c) = (&d.instances[0], &d.instances[1], &d.instances[2]);
    let ops = c.user("ops").await;

    // A device revoked through B: alice's laptop session parked on A ends.
    let registered = a.user("alice").await;
    let laptop_id = [2u8; 16];
    let phone = login(b, &registered, None).await;
    let laptop = login(a, &registered, Some(laptop_id)).await;
    laptop
        .client
        .register_device(proto::RegisterDeviceRequest {
            session_token: laptop.token(),
            device_id: Bytes::copy_from_slice(&laptop_id),
            name: "laptop".into(),
            device_key: Bytes::copy_from_slice(&qpq_client::IdentityKey::generate().public()),
        })
        .await
        .unwrap();
    let parked = tokio::spawn(wait(&laptop, 30_000));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let revoked_at = Instant::now();
    phone
        .client
        .revoke_device(proto::RevokeDeviceRequest {
            session_token: phone.token(),
            device_id: Bytes::copy_from_slice(&laptop_id),
        })
        .await
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(1), parked)
        .await
        .expect("the parked wait on A ended within a second")
        .unwrap();
    assert!(result.is_err(), "{result:?}");
    let reason = tokio::time::timeout(
        Duration::from_secs(1) - revoked_at.elapsed().min(Duration::from_secs(1)),
        laptop.client.connection().closed(),
    )
    .await
    .expect("the laptop's connection on A closed within a second");
    assert!(reason.contains("device revoked"), "{reason}");

    // A server-wide ban through C: carol's session parked on A ends.
    let carol = a.user("carol").await;
    let parked = tokio::spawn(wait(&carol, 30_000));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let banned_at = Instant::now();
    ops.client
        .ban_user(proto::BanUserRequest {
            session_token: ops.token(),
            target: Some(proto::UserRef {
                target: Some(proto::user_ref::Target::Username("carol".into())),
            }),
            channel_id: Bytes::new(),
            reason: "rules".into(),
            duration_secs: 0,
        })
        .await
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(1), parked)
        .await
        .expect("the parked wait on A ended within a second")
        .unwrap();
    assert!(result.is_err(), "{result:?}");
    assert!(banned_at.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn an_unreachable_nats_server_is_a_clear_start_up_error() {
    let cluster = match PgCluster::shared() {
        Ok(c) => c,
        Err(e) => return common::skip("instances::unreachable NATS", &e),
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_data_dir("127.0.0.1:0".parse().unwrap(), dir.path());
    config.store = StoreChoice::Postgres(cluster.postgres_url(&cluster.create_database()));
    config.bus = BusChoice::Nats(format!("nats://qpq:secret-word@127.0.0.1:{port}"));
    let started = Instant::now();
    let error = match qpq_server::start(config).await {
        Ok(_) => panic!("started without NATS"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains(&format!("cannot reach NATS at nats://127.0.0.1:{port}")),
        "{error}"
    );
    assert!(!error.contains("secret-word"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test]
async fn an_instance_with_other_secrets_refuses_to_serve_the_store() {
    let Some(d) = domain("instances::other secrets", 1, 5000, |_| {}).await else {
        return;
    };
    let first = &d.instances[0];
    // A second instance whose data directory was not copied: its own OPAQUE setup and log key.
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_data_dir("127.0.0.1:0".parse().unwrap(), dir.path());
    config.store = first.store.clone();
    config.bus = BusChoice::Nats(d.nats.url());
    let error = match qpq_server::start(config).await {
        Ok(_) => panic!("an instance with other secrets started"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("opaque-server-setup.bin"), "{error}");
    assert!(error.contains("kt-log-key.bin"), "{error}");
    // The first instance still serves: a registration and login work.
    first.user("alice").await;
}
