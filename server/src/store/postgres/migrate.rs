//! Versioned schema migrations, embedded in the binary and run at start.
//!
//! The table `qpq_schema` records each applied version. A start takes an exclusive lock on
//! it, so several instances starting at once migrate one after another; each migration runs
//! in the same transaction as its record (PostgreSQL's DDL is transactional), so a crash or
//! an error leaves the schema as it was, never half-migrated. A database whose schema is
//! newer than this binary is refused: an older binary must not write to a layout it does not
//! know.
//!
//! To change the schema, append a migration (never edit one that shipped): a new version
//! number and the SQL that takes the previous version to it.

use deadpool_postgres::Client;

use super::{db_err, int};
use crate::store::StoreError;

/// One step of the schema: its version and its SQL, in parts applied in order.
struct Migration {
    version: i32,
    what: &'static str,
    sql: &'static [&'static str],
}

/// Every migration, oldest first; versions are consecutive from 1.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        what: "initial schema",
        sql: &[
            include_str!("schema/core.sql"),
            include_str!("schema/keys.sql"),
            include_str!("schema/kt.sql"),
            include_str!("schema/p2p.sql"),
            include_str!("schema/recovery.sql"),
            include_str!("schema/channels.sql"),
            include_str!("schema/moderation.sql"),
            include_str!("schema/blobs.sql"),
            include_str!("schema/devices.sql"),
            include_str!("schema/federation.sql"),
        ],
    },
    Migration {
        version: 2,
        what: "fingerprints of the server's secrets",
        sql: &[include_str!("schema/secrets.sql")],
    },
];

/// The schema version this binary writes.
pub(crate) fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Brings the database's schema to [`latest`]; refuses a newer one.
pub(super) async fn run(client: &mut Client) -> Result<(), StoreError> {
    // Two instances creating the table at once can collide in the catalog; the loser finds
    // it on its second try.
    for attempt in 0.. {
        match client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS qpq_schema (\
                 version INT PRIMARY KEY, what TEXT NOT NULL, applied_at_ms BIGINT NOT NULL)",
            )
            .await
        {
            Ok(()) => break,
            Err(_) if attempt == 0 => continue,
            Err(e) => return Err(migration_err(e, 0)),
        }
    }
    let tx = client.transaction().await.map_err(db_err)?;
    tx.batch_execute("LOCK TABLE qpq_schema IN EXCLUSIVE MODE")
        .await
        .map_err(db_err)?;
    let current: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM qpq_schema", &[])
        .await
        .map_err(db_err)?
        .get(0);
    if current > latest() {
        return Err(StoreError::Unavailable(format!(
            "the database's schema is version {current}, newer than this qpq-server knows \
             (up to {}): run a newer qpq-server, or restore a backup made for this version",
            latest()
        )));
    }
    let now = int(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64));
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        for part in m.sql {
            tx.batch_execute(part)
                .await
                .map_err(|e| migration_err(e, m.version))?;
        }
        tx.execute(
            "INSERT INTO qpq_schema (version, what, applied_at_ms) VALUES ($1, $2, $3)",
            &[&m.version, &m.what, &now],
        )
        .await
        .map_err(db_err)?;
        tracing::info!(
            version = m.version,
            what = m.what,
            "applied a schema migration"
        );
    }
    tx.commit()
        .await
        .map_err(|e| StoreError::Unavailable(format!("the schema migration did not commit: {e}")))
}

fn migration_err(e: tokio_postgres::Error, version: i32) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::Unavailable(format!(
            "schema migration {version} failed (nothing was changed): {} ({})",
            db.message(),
            db.code().code()
        )),
        None => db_err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    #[test]
    fn versions_are_consecutive_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "migration {}", m.what);
        }
    }
}
