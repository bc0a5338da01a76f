//! The cluster store: MySQL / MariaDB through a bounded `mysql_async` pool.
//!
//! Every operation is bounded by the store timeout, so a database that is
//! down or hung turns into a [`StoreError`] in well under a
//! second instead of a hang; broken connections are dropped by the pool and
//! new ones made on the next call, so the store recovers by itself when the
//! server is back. Reads that fail on a broken pooled connection are tried
//! once more (within the same time bound).
//!
//! Writes to a room lock its row (`SELECT … FOR UPDATE`) and assign the
//! next seq inside the transaction; the idempotency check runs under that
//! lock too. Reads of events and of the room's version happen in one
//! statement, so they come from one snapshot.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatty_shared::etag::RoomVersion;
use chatty_shared::room::RoomKey;
use chatty_shared::wire::{Event, EventKind, SiteLimits};
use mysql_async::prelude::{FromRow, Queryable};
use mysql_async::{
    Conn, IsolationLevel, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, Row, TxOpts,
};

use super::{
    deleted_before, deletion_event, deletion_target, kind_code, limit_to_i64, message_event,
    new_epoch, origins_to_json, site_record, Appended, NewMessage, NewSite, SiteRecord, Store,
    StoreError, StoredEvent, Target,
};

/// The schema version this build writes.
const SCHEMA_VERSION: u32 = 1;

/// Most connections one node keeps to the database.
pub const MAX_CONNECTIONS: usize = 16;

/// Time allowed for creating the database and applying migrations at
/// start-up (DDL is slower than the queries the store timeout is for).
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(10);

/// `ER_DUP_ENTRY`.
const DUPLICATE_ENTRY: u16 = 1062;

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
];

/// The event columns, prefixed with `e.`, in [`RawEvent`] order.
const EVENT_COLUMNS: &str =
    "e.seq, e.kind, e.member_id, e.nick, e.text, e.client_id, e.deletes, e.at_ms";

/// The cluster store.
pub struct MysqlStore {
    pool: Pool,
    timeout: Duration,
}

impl std::fmt::Debug for MysqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlStore")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn is_duplicate(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if s.code == DUPLICATE_ENTRY)
}

/// A MySQL failure by kind: a broken connection (I/O, or the driver's
/// view of it), or the server refusing or failing the statement.
fn db_error(e: mysql_async::Error) -> StoreError {
    match e {
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => {
            StoreError::Connection(e.to_string())
        }
        other => StoreError::Server(other.to_string()),
    }
}

/// Decodes a row without panicking on a type mismatch.
fn decode<T: FromRow>(row: Row) -> Result<T, StoreError> {
    mysql_async::from_row_opt(row).map_err(|e| StoreError::Corrupt(format!("unexpected row: {e}")))
}

type SiteRow = (String, String, Vec<u8>, u32, u32, u32);

fn site(row: Row) -> Result<SiteRecord, StoreError> {
    let (id, origins, hash, max_text_bytes, guest_messages, guest_window_secs): SiteRow =
        decode(row)?;
    let limits = SiteLimits {
        max_text_bytes,
        guest_messages,
        guest_window_secs,
    };
    site_record(id, &origins, &hash, limits)
}

/// An event row: seq, kind, member_id, nick, text, client_id, deletes, at_ms.
type RawEvent = (
    u64,
    u8,
    String,
    String,
    String,
    Option<String>,
    Option<u64>,
    i64,
);

impl FromRow for StoredEvent {
    fn from_row_opt(row: Row) -> Result<Self, mysql_async::FromRowError> {
        let (seq, kind, member_id, nick, text, client_id, deletes, at_ms): RawEvent =
            FromRow::from_row_opt(row)?;
        Ok(StoredEvent {
            seq,
            kind,
            member_id,
            nick,
            text,
            client_id,
            deletes,
            at_ms,
        })
    }
}

/// The event in `row`, if there is one.
fn event(row: Option<Row>) -> Result<Option<Event>, StoreError> {
    row.map(|r| decode::<StoredEvent>(r)?.decode()).transpose()
}

/// A room's version from its row; a row whose first write never committed
/// has nothing to show yet.
fn version(epoch: u32, seq: u64) -> RoomVersion {
    if seq == 0 {
        RoomVersion::default()
    } else {
        RoomVersion::new(epoch, seq)
    }
}

/// A row of the version-and-events joins: the room's epoch and seq, then the
/// event's columns (all `NULL` when the room has no matching event).
type JoinedRow = (
    u32,
    u64,
    Option<u64>,
    Option<u8>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<u64>,
    Option<i64>,
);

fn joined(rows: Vec<Row>) -> Result<(Vec<Event>, RoomVersion), StoreError> {
    let mut v = RoomVersion::default();
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let (epoch, seq, e_seq, kind, member_id, nick, text, client_id, deletes, at_ms): JoinedRow =
            decode(row)?;
        v = version(epoch, seq);
        if let (Some(e_seq), Some(kind), Some(member_id), Some(nick), Some(text), Some(at_ms)) =
            (e_seq, kind, member_id, nick, text, at_ms)
        {
            let stored = StoredEvent {
                seq: e_seq,
                kind,
                member_id,
                nick,
                text,
                client_id,
                deletes,
                at_ms,
            };
            events.push(stored.decode()?);
        }
    }
    Ok((events, v))
}

async fn insert_event(
    tx: &mut mysql_async::Transaction<'_>,
    key: &RoomKey,
    e: &Event,
) -> Result<(), StoreError> {
    tx.exec_drop(
        "INSERT INTO events (site, room, seq, kind, member_id, nick, text, client_id, deletes, at_ms)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            key.site(),
            key.room(),
            e.seq,
            kind_code(e.kind),
            &e.member_id,
            &e.nick,
            &e.text,
            &e.client_id,
            e.deletes,
            e.at_ms,
        ),
    )
    .await
    .map_err(db_error)?;
    tx.exec_drop(
        "UPDATE rooms SET seq = ? WHERE site = ? AND room = ?",
        (e.seq, key.site(), key.room()),
    )
    .await
    .map_err(db_error)
}

fn write_tx() -> TxOpts {
    let mut opts = TxOpts::default();
    opts.with_isolation_level(IsolationLevel::ReadCommitted);
    opts
}

/// What a locked room row says.
enum Locked {
    /// The room exists; its row is locked until the transaction ends.
    Room(mysql_async::Transaction<'static>, u32, u64),
    /// The room has no row yet.
    Missing,
}

/// Starts a write transaction and locks the room's row.
async fn lock_room(pool: &Pool, key: &RoomKey) -> Result<Locked, StoreError> {
    let mut tx = pool.start_transaction(write_tx()).await.map_err(db_error)?;
    let row: Option<Row> = tx
        .exec_first(
            "SELECT epoch, seq FROM rooms WHERE site = ? AND room = ? FOR UPDATE",
            (key.site(), key.room()),
        )
        .await
        .map_err(db_error)?;
    match row {
        Some(row) => {
            let (epoch, seq): (u32, u64) = decode(row)?;
            Ok(Locked::Room(tx, epoch, seq))
        }
        None => {
            tx.rollback().await.map_err(db_error)?;
            Ok(Locked::Missing)
        }
    }
}

impl MysqlStore {
    /// Connects, creates the database named in `url` if it is missing (when
    /// allowed to), and applies the migrations. `timeout` bounds every later
    /// operation.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Arc<MysqlStore>, StoreError> {
        let opts = Opts::from_url(url)
            .map_err(|e| StoreError::Connection(format!("bad MySQL URL: {e}")))?;
        // Always the address given: mysql_async would otherwise switch a
        // loopback TCP address to the server's Unix socket behind our back.
        let mut builder = OptsBuilder::from_opts(opts.clone()).prefer_socket(false);
        if !url.contains("pool_min=") && !url.contains("pool_max=") {
            let constraints = PoolConstraints::new(1, MAX_CONNECTIONS)
                .ok_or_else(|| StoreError::Connection("bad pool constraints".into()))?;
            builder = builder.pool_opts(PoolOpts::default().with_constraints(constraints));
        }
        let store = MysqlStore {
            pool: Pool::new(builder),
            timeout,
        };
        tokio::time::timeout(MIGRATION_TIMEOUT, async {
            if let Some(db) = opts.db_name() {
                create_database(opts.clone(), db).await;
            }
            store.migrate().await
        })
        .await
        .map_err(|_| StoreError::Timeout(MIGRATION_TIMEOUT))??;
        Ok(Arc::new(store))
    }

    /// Closes the pool's connections (on shutdown).
    pub async fn disconnect(&self) {
        if let Err(e) = self.pool.clone().disconnect().await {
            tracing::debug!(error = %e, "closing the MySQL pool");
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.get_conn().await.map_err(db_error)?;
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

    /// Runs `f` within the store timeout.
    async fn bounded<T>(
        &self,
        f: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, f)
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))?
    }

    /// Runs a read within the store timeout, once more if the first attempt
    /// met a broken connection.
    async fn read<'a, T, F, Fut>(&'a self, f: F) -> Result<T, StoreError>
    where
        F: Fn(&'a Self) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + 'a,
    {
        self.bounded(async {
            match f(self).await {
                Err(e) if e.retry_may_help() => {
                    tracing::debug!(error = %e, "retrying a MySQL read on a fresh connection");
                    f(self).await
                }
                other => other,
            }
        })
        .await
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        self.pool.get_conn().await.map_err(db_error)
    }

    async fn append_once(&self, key: &RoomKey, msg: &NewMessage) -> Result<Appended, StoreError> {
        for _ in 0..2 {
            let (mut tx, epoch, seq) = match lock_room(&self.pool, key).await? {
                Locked::Room(tx, epoch, seq) => (tx, epoch, seq),
                Locked::Missing => {
                    // Created outside the write transaction, so concurrent
                    // first writers never deadlock; the loser's insert is
                    // ignored and both then queue on the row lock.
                    self.conn()
                        .await?
                        .exec_drop(
                            "INSERT IGNORE INTO rooms (site, room, epoch, seq) VALUES (?, ?, ?, 0)",
                            (key.site(), key.room(), new_epoch()),
                        )
                        .await
                        .map_err(db_error)?;
                    continue;
                }
            };
            let existing: Option<Row> = tx
                .exec_first(
                    format!(
                        "SELECT {EVENT_COLUMNS} FROM events e
                         WHERE e.site = ? AND e.room = ? AND e.member_id = ? AND e.client_id = ?"
                    ),
                    (key.site(), key.room(), &msg.member_id, &msg.client_id),
                )
                .await
                .map_err(db_error)?;
            if let Some(event) = event(existing)? {
                tx.rollback().await.map_err(db_error)?;
                return Ok(Appended::existing(event, version(epoch, seq)));
            }
            let event = message_event(seq + 1, msg);
            insert_event(&mut tx, key, &event).await?;
            tx.commit().await.map_err(db_error)?;
            return Ok(Appended::written(event, epoch));
        }
        Err(StoreError::Server(
            "the room row vanished while writing".into(),
        ))
    }

    async fn delete_once(
        &self,
        key: &RoomKey,
        seq: u64,
        at_ms: i64,
    ) -> Result<Appended, StoreError> {
        let (mut tx, epoch, last) = match lock_room(&self.pool, key).await? {
            Locked::Room(tx, epoch, last) => (tx, epoch, last),
            Locked::Missing => return Err(StoreError::NotFound),
        };
        let found: Option<Row> = tx
            .exec_first(
                "SELECT kind, deleted FROM events WHERE site = ? AND room = ? AND seq = ?",
                (key.site(), key.room(), seq),
            )
            .await
            .map_err(db_error)?;
        let found = found
            .map(decode::<(u8, u8)>)
            .transpose()?
            .map(|(kind, deleted)| (kind, deleted != 0));
        if deletion_target(found)? == Target::DeletedBefore {
            let existing: Option<Row> = tx
                .exec_first(
                    format!(
                        "SELECT {EVENT_COLUMNS} FROM events e
                         WHERE e.site = ? AND e.room = ? AND e.deletes = ?"
                    ),
                    (key.site(), key.room(), seq),
                )
                .await
                .map_err(db_error)?;
            let existing = event(existing)?;
            tx.rollback().await.map_err(db_error)?;
            return deleted_before(existing, version(epoch, last));
        }
        let event = deletion_event(last + 1, seq, at_ms);
        insert_event(&mut tx, key, &event).await?;
        tx.exec_drop(
            "UPDATE events SET deleted = 1 WHERE site = ? AND room = ? AND seq = ?",
            (key.site(), key.room(), seq),
        )
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(Appended::written(event, epoch))
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

#[async_trait]
impl Store for MysqlStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|s| async move { s.conn().await?.ping().await.map_err(db_error) })
            .await
    }

    async fn create_site(&self, site: &NewSite) -> Result<(), StoreError> {
        self.bounded(async {
            let r = self
                .conn()
                .await?
                .exec_drop(
                    "INSERT INTO sites (id, origins, secret_hash, max_text_bytes, guest_messages, guest_window_secs)
                     VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        &site.id,
                        origins_to_json(&site.origins),
                        &site.secret_hash[..],
                        site.limits.max_text_bytes,
                        site.limits.guest_messages,
                        site.limits.guest_window_secs,
                    ),
                )
                .await;
            match r {
                Ok(()) => Ok(()),
                Err(e) if is_duplicate(&e) => Err(StoreError::Conflict),
                Err(e) => Err(db_error(e)),
            }
        })
        .await
    }

    async fn site(&self, id: &str) -> Result<Option<SiteRecord>, StoreError> {
        self.read(|s| async move {
            let row: Option<Row> = s
                .conn()
                .await?
                .exec_first(
                    "SELECT id, origins, secret_hash, max_text_bytes, guest_messages, guest_window_secs
                     FROM sites WHERE id = ?",
                    (id,),
                )
                .await
                .map_err(db_error)?;
            row.map(site).transpose()
        })
        .await
    }

    async fn list_sites(&self) -> Result<Vec<SiteRecord>, StoreError> {
        self.read(|s| async move {
            let rows: Vec<Row> = s
                .conn()
                .await?
                .query(
                    "SELECT id, origins, secret_hash, max_text_bytes, guest_messages, guest_window_secs
                     FROM sites ORDER BY id",
                )
                .await
                .map_err(db_error)?;
            rows.into_iter().map(site).collect()
        })
        .await
    }

    async fn set_limits(&self, site: &str, limits: SiteLimits) -> Result<(), StoreError> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            // Matched rather than changed rows: setting the same limits twice
            // is not "not found".
            let found: Option<Row> = conn
                .exec_first("SELECT 1 FROM sites WHERE id = ?", (site,))
                .await
                .map_err(db_error)?;
            if found.is_none() {
                return Err(StoreError::NotFound);
            }
            conn.exec_drop(
                "UPDATE sites SET max_text_bytes = ?, guest_messages = ?, guest_window_secs = ?
                 WHERE id = ?",
                (
                    limits.max_text_bytes,
                    limits.guest_messages,
                    limits.guest_window_secs,
                    site,
                ),
            )
            .await
            .map_err(db_error)
        })
        .await
    }

    async fn ban(&self, site: &str, member_id: &str) -> Result<(), StoreError> {
        self.bounded(async {
            self.conn()
                .await?
                .exec_drop(
                    "INSERT IGNORE INTO bans (site, member_id) VALUES (?, ?)",
                    (site, member_id),
                )
                .await
                .map_err(db_error)
        })
        .await
    }

    async fn is_banned(&self, site: &str, member_id: &str) -> Result<bool, StoreError> {
        self.read(|s| async move {
            let row: Option<Row> = s
                .conn()
                .await?
                .exec_first(
                    "SELECT 1 FROM bans WHERE site = ? AND member_id = ?",
                    (site, member_id),
                )
                .await
                .map_err(db_error)?;
            Ok(row.is_some())
        })
        .await
    }

    async fn append_message(&self, key: &RoomKey, msg: NewMessage) -> Result<Appended, StoreError> {
        self.bounded(self.append_once(key, &msg)).await
    }

    async fn delete_message(
        &self,
        key: &RoomKey,
        seq: u64,
        at_ms: i64,
    ) -> Result<Appended, StoreError> {
        if seq > i64::MAX as u64 {
            return Err(StoreError::NotFound);
        }
        self.bounded(self.delete_once(key, seq, at_ms)).await
    }

    async fn events_after(
        &self,
        key: &RoomKey,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Event>, RoomVersion), StoreError> {
        if limit == 0 {
            return Ok((Vec::new(), self.room_version(key).await?));
        }
        self.read(|s| async move {
            let rows: Vec<Row> = s
                .conn()
                .await?
                .exec(
                    format!(
                        "SELECT r.epoch, r.seq, {EVENT_COLUMNS} FROM rooms r
                         LEFT JOIN events e ON e.site = r.site AND e.room = r.room AND e.seq > ?
                         WHERE r.site = ? AND r.room = ?
                         ORDER BY e.seq LIMIT ?"
                    ),
                    (after, key.site(), key.room(), limit_to_i64(limit)),
                )
                .await
                .map_err(db_error)?;
            joined(rows)
        })
        .await
    }

    async fn recent_messages(
        &self,
        key: &RoomKey,
        limit: usize,
    ) -> Result<(Vec<Event>, RoomVersion), StoreError> {
        if limit == 0 {
            return Ok((Vec::new(), self.room_version(key).await?));
        }
        self.read(|s| async move {
            let rows: Vec<Row> = s
                .conn()
                .await?
                .exec(
                    format!(
                        "SELECT r.epoch, r.seq, {EVENT_COLUMNS} FROM rooms r
                         LEFT JOIN events e ON e.site = r.site AND e.room = r.room
                             AND e.kind = ? AND e.deleted = 0
                         WHERE r.site = ? AND r.room = ?
                         ORDER BY e.seq DESC LIMIT ?"
                    ),
                    (
                        kind_code(EventKind::Message),
                        key.site(),
                        key.room(),
                        limit_to_i64(limit),
                    ),
                )
                .await
                .map_err(db_error)?;
            let (mut events, v) = joined(rows)?;
            events.reverse();
            Ok((events, v))
        })
        .await
    }

    async fn room_version(&self, key: &RoomKey) -> Result<RoomVersion, StoreError> {
        self.read(|s| async move {
            let row: Option<Row> = s
                .conn()
                .await?
                .exec_first(
                    "SELECT epoch, seq FROM rooms WHERE site = ? AND room = ?",
                    (key.site(), key.room()),
                )
                .await
                .map_err(db_error)?;
            match row {
                Some(row) => {
                    let (epoch, seq): (u32, u64) = decode(row)?;
                    Ok(version(epoch, seq))
                }
                None => Ok(RoomVersion::default()),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;
    use std::time::Instant;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::watch;

    const SERVER: &str = "mysql://root@127.0.0.1:3306";
    const HOW_TO_START: &str =
        "start MariaDB: start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd";

    /// A fresh database on the real server, dropped by [`TestDb::drop_db`].
    struct TestDb {
        name: String,
    }

    impl TestDb {
        async fn new() -> TestDb {
            let name = format!("chatty_t_{:016x}", rand::random::<u64>());
            if let Err(e) = Conn::new(Opts::from_url(SERVER).unwrap()).await {
                panic!("MariaDB at {SERVER} is unreachable ({e}); {HOW_TO_START}");
            }
            TestDb { name }
        }

        fn url(&self) -> String {
            format!("{SERVER}/{}", self.name)
        }

        fn url_via(&self, addr: std::net::SocketAddr) -> String {
            format!("mysql://root@{addr}/{}?prefer_socket=false", self.name)
        }

        async fn drop_db(self) {
            let mut conn = Conn::new(Opts::from_url(SERVER).unwrap()).await.unwrap();
            conn.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name))
                .await
                .unwrap();
            conn.disconnect().await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_suite() {
        let db = TestDb::new().await;
        // Generous: the suite runs beside other builds on a small machine.
        let store = MysqlStore::connect(&db.url(), Duration::from_secs(10))
            .await
            .expect("connect");
        conformance::run_all(store.clone()).await;
        // Migrations are idempotent.
        let again = MysqlStore::connect(&db.url(), Duration::from_secs(10))
            .await
            .expect("reconnect");
        assert_eq!(
            again.list_sites().await.unwrap().len(),
            store.list_sites().await.unwrap().len()
        );
        again.disconnect().await;
        store.disconnect().await;
        db.drop_db().await;
    }

    #[tokio::test]
    async fn unreachable_server_fails_fast() {
        let t = Instant::now();
        let r = MysqlStore::connect(
            "mysql://root@127.0.0.1:1/chatty_nowhere?prefer_socket=false",
            Duration::from_millis(600),
        )
        .await;
        assert!(matches!(
            r,
            Err(StoreError::Connection(_) | StoreError::Timeout(_))
        ));
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "took {:?}",
            t.elapsed()
        );
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Mode {
        Up,
        /// Connections stay open and nothing moves: a hung server.
        Frozen,
        /// Connections are closed and new ones refused: a stopped server.
        Down,
    }

    /// A TCP proxy to the real server that can hang or drop connections.
    async fn proxy(mode: watch::Receiver<Mode>) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let mut mode = mode.clone();
                tokio::spawn(async move {
                    let mut client = client;
                    let current = *mode.borrow_and_update();
                    match current {
                        Mode::Down => {
                            let _ = client.shutdown().await;
                        }
                        Mode::Frozen => {
                            let _ = mode.changed().await;
                        }
                        Mode::Up => {
                            let Ok(mut server) = TcpStream::connect("127.0.0.1:3306").await else {
                                return;
                            };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
                                _ = mode.changed() => {}
                            }
                            // Forwarding stopped. Frozen: hold both sockets
                            // until the mode changes again; Down: drop them.
                            while *mode.borrow_and_update() == Mode::Frozen {
                                if mode.changed().await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hung_or_stopped_server_is_unavailable_quickly_and_recovers() {
        let db = TestDb::new().await;
        let (set_mode, mode) = watch::channel(Mode::Up);
        let addr = proxy(mode).await;
        let store = MysqlStore::connect(&db.url_via(addr), Duration::from_millis(600))
            .await
            .expect("connect through the proxy");
        let key = RoomKey::new("demo", "lobby").unwrap();
        store
            .append_message(&key, conformance::message("m1", "c1", "before"))
            .await
            .unwrap();

        for broken in [Mode::Frozen, Mode::Down] {
            set_mode.send(broken).unwrap();
            for i in 0..3 {
                let t = Instant::now();
                let r = store
                    .append_message(&key, conformance::message("m1", &format!("x{i}"), "during"))
                    .await;
                assert!(
                    matches!(r, Err(StoreError::Connection(_) | StoreError::Timeout(_))),
                    "{broken:?}: {r:?}"
                );
                assert!(
                    t.elapsed() < Duration::from_secs(1),
                    "{broken:?} append took {:?}",
                    t.elapsed()
                );
                let t = Instant::now();
                let r = store.room_version(&key).await;
                assert!(
                    matches!(r, Err(StoreError::Connection(_) | StoreError::Timeout(_))),
                    "{broken:?}: {r:?}"
                );
                assert!(
                    t.elapsed() < Duration::from_secs(1),
                    "{broken:?} read took {:?}",
                    t.elapsed()
                );
                let t = Instant::now();
                assert!(store.ping().await.is_err());
                assert!(
                    t.elapsed() < Duration::from_secs(1),
                    "{broken:?} ping took {:?}",
                    t.elapsed()
                );
            }
            set_mode.send(Mode::Up).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match store
                    .append_message(
                        &key,
                        conformance::message("m1", &format!("after-{broken:?}"), "after"),
                    )
                    .await
                {
                    Ok(a) => {
                        assert!(a.created);
                        break;
                    }
                    Err(e) => {
                        assert!(Instant::now() < deadline, "did not recover: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            store.ping().await.unwrap();
        }
        let (events, version) = store.events_after(&key, 0, 100).await.unwrap();
        assert_eq!(events.len() as u64, version.seq);
        assert!(events.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        store.disconnect().await;
        db.drop_db().await;
    }
}
