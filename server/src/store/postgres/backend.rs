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

    async fn place(&self) -> PgPlace {
        let cluster = match PgCluster::shared() {
            Ok(c) => c,
            Err(e) => panic!("{e}; the PostgreSQL conformance tests need a PostgreSQL server"),
        };
        let db = cluster.create_database().await;
        PgPlace { url: cluster.url(&db) }
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
