//! The MySQL schema: the tables, their migrations and the schema version,
//! applied at start-up.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Pool};

use super::db_error;
use crate::store::StoreError;

/// The schema version this build writes.
const SCHEMA_VERSION: u32 = 1;

/// Time allowed for creating the database and applying migrations at
/// start-up (DDL is slower than the queries the store timeout is for).
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(10);

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS schema_version (
        version INT UNSIGNED NOT NULL PRIMARY KEY
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS sites (
        id VARBINARY(32) NOT NULL PRIMARY KEY,
        origins MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        secret_hash BINARY(32) NOT NULL,
        max_text_bytes INT UNSIGNED NOT NULL,
        guest_messages INT UNSIGNED NOT NULL,
        guest_window_secs INT UNSIGNED NOT NULL
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS bans (
        site VARBINARY(32) NOT NULL,
        member_id VARBINARY(128) NOT NULL,
        PRIMARY KEY (site, member_id)
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS rooms (
        site VARBINARY(32) NOT NULL,
        room VARBINARY(64) NOT NULL,
        epoch INT UNSIGNED NOT NULL,
        seq BIGINT UNSIGNED NOT NULL,
        PRIMARY KEY (site, room)
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS events (
        site VARBINARY(32) NOT NULL,
        room VARBINARY(64) NOT NULL,
        seq BIGINT UNSIGNED NOT NULL,
        kind TINYINT UNSIGNED NOT NULL,
        member_id VARBINARY(128) NOT NULL,
        nick VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        text MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        client_id VARBINARY(128) NULL,
        deletes BIGINT UNSIGNED NULL,
        deleted TINYINT UNSIGNED NOT NULL DEFAULT 0,
        at_ms BIGINT NOT NULL,
        PRIMARY KEY (site, room, seq),
        UNIQUE KEY events_by_client (site, room, member_id, client_id),
        UNIQUE KEY events_by_deletes (site, room, deletes),
        KEY events_live (site, room, kind, deleted, seq)
    ) ENGINE=InnoDB",
    // User-token keys of the host sites.
    "CREATE TABLE IF NOT EXISTS user_keys (
        site VARBINARY(32) NOT NULL,
        kid VARBINARY(64) NOT NULL,
        alg TINYINT UNSIGNED NOT NULL,
        key_bytes VARBINARY(256) NOT NULL,
        PRIMARY KEY (site, kid)
    ) ENGINE=InnoDB",
    // A site's rules (one JSON document) and rooms' own slow mode.
    "CREATE TABLE IF NOT EXISTS site_rules (
        site VARBINARY(32) NOT NULL PRIMARY KEY,
        rules MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS room_slow_mode (
        site VARBINARY(32) NOT NULL,
        room VARBINARY(64) NOT NULL,
        secs INT UNSIGNED NOT NULL,
        PRIMARY KEY (site, room)
    ) ENGINE=InnoDB",
    // Moderation: the audit, members' timeouts, the members known as
    // moderators.
    "CREATE TABLE IF NOT EXISTS audit (
        id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
        site VARBINARY(32) NOT NULL,
        room VARBINARY(64) NOT NULL,
        at_ms BIGINT NOT NULL,
        moderator_id VARBINARY(128) NOT NULL,
        moderator_nick VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        action TINYINT UNSIGNED NOT NULL,
        member_id VARBINARY(128) NULL,
        secs INT UNSIGNED NULL,
        seq BIGINT UNSIGNED NULL,
        KEY audit_by_site (site, id)
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS timeouts (
        site VARBINARY(32) NOT NULL,
        member_id VARBINARY(128) NOT NULL,
        until_ms BIGINT NOT NULL,
        PRIMARY KEY (site, member_id)
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS moderators (
        site VARBINARY(32) NOT NULL,
        member_id VARBINARY(128) NOT NULL,
        PRIMARY KEY (site, member_id)
    ) ENGINE=InnoDB",
];

/// Creates the database named in `opts` if it is missing (when allowed to)
/// and applies the migrations, within [`MIGRATION_TIMEOUT`].
pub(super) async fn prepare(pool: &Pool, opts: &Opts) -> Result<(), StoreError> {
    tokio::time::timeout(MIGRATION_TIMEOUT, async {
        if let Some(db) = opts.db_name() {
            create_database(opts.clone(), db).await;
        }
        migrate(pool).await
    })
    .await
    .map_err(|_| StoreError::Timeout(MIGRATION_TIMEOUT))?
}

async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut conn = pool.get_conn().await.map_err(db_error)?;
    for sql in MIGRATIONS {
        conn.query_drop(*sql).await.map_err(db_error)?;
    }
    let found: Option<Option<u32>> = conn
        .query_first("SELECT MAX(version) FROM schema_version")
        .await
        .map_err(db_error)?;
    match found.flatten() {
        Some(v) if v > SCHEMA_VERSION => Err(StoreError::Server(format!(
            "the database has schema version {v}, newer than this build's {SCHEMA_VERSION}"
        ))),
        _ => conn
            .exec_drop(
                "INSERT IGNORE INTO schema_version (version) VALUES (?)",
                (SCHEMA_VERSION,),
            )
            .await
            .map_err(db_error),
    }
}

/// `CREATE DATABASE IF NOT EXISTS`, connected without a database. Failure
/// is only logged: the user may lack the privilege while the database
/// exists, and a missing one shows up in the migrations anyway.
async fn create_database(opts: Opts, db: &str) {
    let admin = OptsBuilder::from_opts(opts)
        .prefer_socket(false)
        .db_name(None::<String>);
    let result = async {
        let mut conn = Conn::new(admin).await?;
        let sql = format!("CREATE DATABASE IF NOT EXISTS `{}`", db.replace('`', "``"));
        conn.query_drop(sql).await?;
        conn.disconnect().await
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "could not create the database (it may exist)");
    }
}
