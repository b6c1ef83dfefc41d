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

/// Races between instances, 100 rounds each: an epoch rotated through A and B at once has
/// one winner (only its welcome is queued); a KeyPackage fetched through A and B at once
/// reaches one of them; a username registered through A and B at once is one account.
#[tokio::test]
async fn races_across_instances_have_one_winner() {
    let Some(d) = domain("instances::races", 2, 5000, |c| {
        c.key_package_fetches_per_minute = 10_000;
        c.rate_limit = vec!["all=off".parse().unwrap()];
    })
    .await
    else {
        return;
    };
    let (a, b) = (&d.instances[0], &d.instances[1]);
    let alice_a = a.user("alice").await;
    let alice_b = login(b, &alice_a, None).await;
    let bob_b = b.user("bob").await;
    let bob_a = login(a, &bob_b, None).await;
    let carol = a.user("carol").await;
    let channel = alice_a
        .client
        .create_channel(proto::CreateChannelRequest {
            session_token: alice_a.token(),
            name: "team".into(),
            description: String::new(),
            initial_members: vec![bob_a.to().unwrap(), carol.to().unwrap()],
            initial_epoch: 0,
            settings: Default::default(),
        })
        .await
        .unwrap()
        .channel_id;
    drain(&carol).await;

    for round in 0..100u64 {
        // One epoch, rotated by alice through A and through B at once; every tenth round the
        // commit adds a new member with a welcome.
        let newcomer = if round % 10 == 0 {
            Some(b.user(&format!("dave{round}")).await)
        } else {
            None
        };
        let rotate = |user: &User, tag: &'static str| {
            let client = user.client.clone();
            let request = proto::RotateKeysRequest {
                session_token: user.token(),
                channel_id: channel.clone(),
                epoch: round,
                commit: Bytes::from(format!("{tag}-commit-{round}")),
                welcomes: newcomer
                    .iter()
                    .map(|n| proto::WelcomeDelivery {
                        recipient: n.to(),
                        welcome: Bytes::from(format!("{tag}-welcome-{round}")),
                    })
                    .collect(),
            };
            async move { client.rotate_keys(request).await }
        };
        let (on_a, on_b) = tokio::join!(rotate(&alice_a, "a"), rotate(&alice_b, "b"));
        let winner = match (on_a, on_b) {
            (Ok(_), Err(e)) => {
                assert_eq!(
                    e.status().unwrap().code(),
                    qpq_runtime::StatusCode::Conflict
                );
                "a"
            }
            (Err(e), Ok(_)) => {
                assert_eq!(
                    e.status().unwrap().code(),
                    qpq_runtime::StatusCode::Conflict
                );
                "b"
            }
            other => panic!("round {round}: not exactly one winner: {other:?}"),
        };
        assert_eq!(
            drain(&carol).await,
            vec![format!("{winner}-commit-{round}").into_bytes()],
            "round {round}"
        );
        if let Some(newcomer) = &newcomer {
            assert_eq!(
                drain(newcomer).await,
                vec![format!("{winner}-welcome-{round}").into_bytes()],
                "round {round}: the welcome of the winner only"
            );
        }
    }

    for round in 0..100u32 {
        // One KeyPackage of carol's, fetched through A and through B at once.
        carol
            .client
            .upload_key_package(proto::UploadKeyPackageRequest {
                session_token: carol.token(),
                key_package: Bytes::from(format!("kp-{round}")),
                last_resort: false,
            })
            .await
            .unwrap();
        let fetch = |user: &User| {
            let client = user.client.clone();
            let request = proto::FetchKeyPackageRequest {
                session_token: user.token(),
                identity_key: Bytes::copy_from_slice(&carol.identity.public()),
            };
            async move { client.fetch_key_package(request).await }
        };
        let (on_a, on_b) = tokio::join!(fetch(&alice_a), fetch(&bob_b));
        let got: Vec<_> = [on_a, on_b]
            .into_iter()
            .filter_map(|r| r.ok())
            .filter(|r| !r.key_package.is_empty() && !r.last_resort)
            .collect();
        assert_eq!(got.len(), 1, "round {round}: {got:?}");
        assert_eq!(&got[0].key_package[..], format!("kp-{round}").as_bytes());
    }

    for round in 0..100u32 {
        // One username registered through A and through B at once.
        let name = format!("racer{round}");
        let (client_a, client_b) = (a.client().await, b.client().await);
        let register = |client: QpqClient| {
            let name = name.clone();
            async move {
                let key = qpq_client::IdentityKey::generate();
                qpq_client::register(&client, &name, PASSWORD, &key.public()).await
            }
        };
        let (on_a, on_b) = tokio::join!(register(client_a), register(client_b));
        let ok = [on_a.is_ok(), on_b.is_ok()]
            .iter()
            .filter(|ok| **ok)
            .count();
        assert_eq!(ok, 1, "round {round}: {:?} {:?}", on_a.err(), on_b.err());
    }
}

/// Removes and returns a user's queued payloads.
async fn drain(user: &User) -> Vec<Vec<u8>> {
    user.client
        .fetch(proto::FetchRequest {
            session_token: user.token(),
            limit: 100,
        })
        .await
        .unwrap()
        .messages
        .into_iter()
        .map(|m| m.payload.to_vec())
        .collect()
}

/// 200 registrations spread over three instances, many at once: one dense log, every binding
/// at its own leaf, and a head seen on A is proven consistent with the later head on C.
#[tokio::test]
async fn registrations_on_three_instances_make_one_consistent_log() {
    use proto::audit_key_transparency_request::Subject;
    use qpq_client::kt::verify_audit;
    let Some(d) = domain("instances::KT", 3, 5000, |c| {
        c.rate_limit = vec!["all=off".parse().unwrap()];
    })
    .await
    else {
        return;
    };
    let auditor = d.instances[0].user("auditor").await;
    let audit = |user: &User, subject: Option<Subject>, last_seen: u64| {
        let client = user.client.clone();
        let request = proto::AuditKeyTransparencyRequest {
            session_token: user.token(),
            subject,
            last_seen_tree_size: last_seen,
        };
        async move { client.audit_key_transparency(request).await.unwrap() }
    };
    let register_batch = |from: usize, to: usize| {
        let clients: Vec<_> = (from..to).map(|i| (i, &d.instances[i % 3])).collect();
        async move {
            // Ten at a time, over the three instances (the client's password hashing is
            // the slow part here, not the log).
            let mut keys = Vec::new();
            for chunk in clients.chunks(10) {
                let mut tasks = Vec::new();
                for (i, server) in chunk {
                    let client = server.client().await;
                    let name = format!("u{i}");
                    tasks.push(tokio::spawn(async move {
                        let key = qpq_client::IdentityKey::generate();
                        qpq_client::register(&client, &name, PASSWORD, &key.public())
                            .await
                            .unwrap();
                        key.public()
                    }));
                }
                for t in tasks {
                    keys.push(t.await.unwrap());
                }
            }
            keys
        }
    };
    let mut keys = register_batch(0, 100).await;
    let first = audit(&auditor, None, 0).await;
    let pin: [u8; 32] = first.log_public_key[..].try_into().unwrap();
    let seen = verify_audit(&first, &pin, None).unwrap().head;
    assert_eq!(seen.tree_size, 101);
    keys.extend(register_batch(100, 200).await);

    let on_c = login(&d.instances[2], &auditor, None).await;
    let later = audit(&on_c, None, seen.tree_size).await;
    assert_eq!(
        &later.log_public_key[..],
        &pin,
        "one log key on every instance"
    );
    let head = verify_audit(&later, &pin, Some(&seen))
        .expect("C's head is consistent with A's earlier one")
        .head;
    assert_eq!(head.tree_size, 201, "one leaf per registration, no gaps");
    let on_b = login(&d.instances[1], &auditor, None).await;
    let mut indexes = std::collections::BTreeSet::new();
    for (i, key) in keys.iter().enumerate() {
        let response = audit(&on_b, Some(Subject::Username(format!("u{i}"))), 0).await;
        let verified = verify_audit(&response, &pin, None).unwrap();
        let (index, leaf) = verified.leaf.unwrap();
        assert_eq!(&leaf.identity_key[..], key);
        indexes.insert(index);
    }
    indexes.insert(0);
    assert_eq!(
        indexes,
        (0..201).collect(),
        "dense: every index holds a binding"
    );
}
