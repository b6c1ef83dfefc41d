//! The PostgreSQL backend as the conformance suite drives it: a new database per store, in
//! the test process's throw-away cluster.

use std::collections::BTreeMap;

use super::{PgOptions, PgStore, census};
use crate::store::conformance::{Backend, Options};
use crate::testing::PgCluster;

/// A database of its own in the shared test cluster.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PgBackend;

/// The test cluster's address of one database.
pub(crate) struct PgPlace {
    url: String,
}

impl Backend for PgBackend {
    type Store = PgStore;
    type Place = PgPlace;
    const PURGE_BOUND: usize = super::PURGE_CHUNK as usize;

    fn ready(&self) -> Result<(), String> {
        PgCluster::shared().map(|_| ())
    }

    async fn place(&self) -> PgPlace {
        let cluster = match PgCluster::shared() {
            Ok(c) => c,
            Err(e) => panic!("{e}; the PostgreSQL conformance tests need a PostgreSQL server"),
        };
        let db = cluster.create_database();
        PgPlace {
            url: cluster.url(&db),
        }
    }

    async fn open(&self, place: &PgPlace, options: &Options) -> PgStore {
        let options = PgOptions {
            limits: options.limits,
            clock: options.clock.clone(),
            ..PgOptions::default()
        };
        PgStore::connect(&place.url, options)
            .await
            .expect("connect to the test database")
    }

    async fn census(&self, store: &PgStore) -> BTreeMap<String, u64> {
        census(store).await
    }
}

mod conformance {
    use super::PgBackend;

    crate::store_conformance_suite!(PgBackend);
}

/// What only this engine has: its start-up errors, migrations and failure policy.
mod tests {
    use super::*;

    /// Skips (loudly; fails under CI=true) when no PostgreSQL can start here.
    macro_rules! need_postgres {
        ($test:literal) => {
            if let Err(why) = PgCluster::shared() {
                crate::store::conformance::skip($test, &why);
                return;
            }
        };
    }
    use crate::store::conformance::{ALICE, Fixture, msg};
    use crate::store::{Seq, Store, StoreError};

    async fn connect(url: &str) -> Result<PgStore, StoreError> {
        PgStore::connect(url, PgOptions::default()).await
    }

    #[tokio::test]
    async fn a_failed_commit_is_not_sticky() {
        need_postgres!("a_failed_commit_is_not_sticky");
        let f = Fixture::with_alice(&PgBackend).await;
        f.store.engine().unwrap().inject_commit_failure_for_tests();
        let r = f.store.enqueue(vec![(ALICE, msg("lost"))]).await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        // The next transaction is independent: served, and the refused write is not there.
        assert_eq!(
            f.store.enqueue(vec![(ALICE, msg("next"))]).await.unwrap(),
            vec![Seq(1)]
        );
        let page = f.store.peek(&ALICE, Seq::ZERO, 10).await.unwrap();
        assert_eq!(page.messages.len(), 1);
        assert_eq!(&page.messages[0].payload[..], b"next");
    }

    /// A batch whose commit failed (outcome unknown) is never written again call by call: every
    /// call in it answers Unavailable, and what answered Ok is exactly what is stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_batch_commit_is_not_replayed() {
        need_postgres!("a_failed_batch_commit_is_not_replayed");
        let f = Fixture::with_alice(&PgBackend).await;
        for round in 0..5 {
            f.store.engine().unwrap().inject_commit_failure_for_tests();
            let calls: Vec<_> = (0..32)
                .map(|i| {
                    let s = f.store.clone();
                    tokio::spawn(async move {
                        s.enqueue(vec![(ALICE, msg(&format!("r{round}-{i}")))])
                            .await
                    })
                })
                .collect();
            let mut ok = 0;
            for c in calls {
                match c.await.unwrap() {
                    Ok(_) => ok += 1,
                    Err(StoreError::Unavailable(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            assert!(ok < 32, "round {round}: a failed commit answered Ok");
            let stored = f
                .store
                .peek(&ALICE, Seq::ZERO, 10_000)
                .await
                .unwrap()
                .messages
                .iter()
                .filter(|m| m.payload.starts_with(format!("r{round}-").as_bytes()))
                .count();
            assert_eq!(stored, ok, "round {round}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_server_is_named_in_the_error() {
        need_postgres!("an_unreachable_server_is_named_in_the_error");
        let dir = tempfile::tempdir().unwrap();
        let url = format!("host={} user=postgres dbname=nowhere", dir.path().display());
        let err = connect(&url).await.unwrap_err().to_string();
        assert!(err.contains("cannot reach PostgreSQL"), "{err}");
        assert!(err.contains("is it running"), "{err}");
        let err = connect("postgres://[::1").await.unwrap_err().to_string();
        assert!(err.contains("does not parse"), "{err}");
    }

    #[tokio::test]
    async fn refused_credentials_and_a_missing_database_are_named() {
        need_postgres!("refused_credentials_and_a_missing_database_are_named");
        let cluster = PgCluster::shared().unwrap();
        let db = cluster.create_database();
        let admin = connect(&cluster.url(&db)).await.unwrap();
        drop(admin);
        let (client, conn) = tokio_postgres::connect(&cluster.url(&db), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(
                "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'qpq_password_user') \
                 THEN CREATE ROLE qpq_password_user LOGIN PASSWORD 'right'; END IF; END $$",
            )
            .await
            .unwrap();
        let wrong = format!("{} user=qpq_password_user password=wrong", cluster.url(&db));
        let err = connect(&wrong).await.unwrap_err().to_string();
        assert!(err.contains("refused the credentials"), "{err}");
        let missing = cluster.url("no_such_database");
        let err = connect(&missing).await.unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[tokio::test]
    async fn migrations_run_once_and_a_newer_schema_is_refused() {
        need_postgres!("migrations_run_once_and_a_newer_schema_is_refused");
        let cluster = PgCluster::shared().unwrap();
        let url = cluster.url(&cluster.create_database());
        // Several instances starting at once migrate one after another.
        let starts: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { connect(&url).await })
            })
            .collect();
        for s in starts {
            s.await.unwrap().unwrap();
        }
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let applied: i64 = client
            .query_one("SELECT count(*) FROM qpq_schema", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(applied, i64::from(super::super::migrate::latest()));
        client
            .batch_execute("INSERT INTO qpq_schema VALUES (1000, 'from the future', 0)")
            .await
            .unwrap();
        let err = connect(&url).await.unwrap_err().to_string();
        assert!(err.contains("newer than this qpq-server knows"), "{err}");
    }
}
