//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`,
//! so a commit is on disk before the caller answers `201`.
//!
//! One writer connection (a mutex serialises every write, which also
//! serialises each room's seq) and a few reader connections; WAL lets the
//! readers run beside the writer, each read seeing one committed snapshot.
//! Every call runs on tokio's blocking pool.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatty_shared::wire::{Event, EventKind, SiteLimits, SiteRules};
use chatty_shared::RoomKey;
use chatty_shared::RoomVersion;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::batch::{self, RoomRow};
use super::rows::{
    deleted_before, deletion_event, deletion_target, kind_code, limit_to_i64, new_epoch,
    origins_to_json, rules_from_json, rules_to_json, seq_to_i64, site_record, StoredEvent, Target,
};
use super::{rows, Appended, Erased, NewMessage, NewSite, SiteRecord, Store, StoreError};
use crate::host_token::UserKey;

mod moderation;

/// The schema version this build writes.
const SCHEMA_VERSION: i64 = 1;

/// Reader connections kept open beside the writer.
const READERS: usize = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS sites (
    id TEXT PRIMARY KEY,
    origins TEXT NOT NULL,
    secret_hash BLOB NOT NULL,
    max_text_bytes INTEGER NOT NULL,
    guest_messages INTEGER NOT NULL,
    guest_window_secs INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS bans (
    site TEXT NOT NULL,
    member_id TEXT NOT NULL,
    PRIMARY KEY (site, member_id)
);
CREATE TABLE IF NOT EXISTS rooms (
    site TEXT NOT NULL,
    room TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (site, room)
);
CREATE TABLE IF NOT EXISTS events (
    site TEXT NOT NULL,
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    member_id TEXT NOT NULL,
    nick TEXT NOT NULL,
    text TEXT NOT NULL,
    client_id TEXT,
    deletes INTEGER,
    deleted INTEGER NOT NULL DEFAULT 0,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (site, room, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS events_by_client ON events (site, room, member_id, client_id);
CREATE UNIQUE INDEX IF NOT EXISTS events_by_deletes ON events (site, room, deletes);
-- User-token keys of the host sites.
CREATE TABLE IF NOT EXISTS user_keys (
    site TEXT NOT NULL,
    kid TEXT NOT NULL,
    alg INTEGER NOT NULL,
    key_bytes BLOB NOT NULL,
    PRIMARY KEY (site, kid)
);
CREATE INDEX IF NOT EXISTS events_live ON events (site, room, kind, deleted, seq);

-- A site's rules (one JSON document) and rooms' own slow mode.
CREATE TABLE IF NOT EXISTS site_rules (
    site TEXT PRIMARY KEY,
    rules TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS room_slow_mode (
    site TEXT NOT NULL,
    room TEXT NOT NULL,
    secs INTEGER NOT NULL,
    PRIMARY KEY (site, room)
);
";

const EVENT_COLUMNS: &str = "seq, kind, member_id, nick, text, client_id, deletes, at_ms";

/// The embedded store.
pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    readers: Vec<Arc<Mutex<Connection>>>,
    next_reader: AtomicUsize,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

/// A SQLite failure by kind: a value this build cannot read, or a damaged
/// file, is corrupt data; anything else is the database failing.
fn failed(e: rusqlite::Error) -> StoreError {
    use rusqlite::Error as E;
    match &e {
        E::FromSqlConversionFailure(..) | E::IntegralValueOutOfRange(..) => {
            StoreError::Corrupt(e.to_string())
        }
        E::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
            ) =>
        {
            StoreError::Corrupt(e.to_string())
        }
        _ => StoreError::Server(e.to_string()),
    }
}

/// Runs `f` with `conn` on tokio's blocking pool.
async fn blocking<T, F>(conn: Arc<Mutex<Connection>>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(move || f(&mut conn.lock()))
        .await
        .map_err(|e| StoreError::Server(format!("a store task failed: {e}")))?
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and applies
    /// the schema. The parent directory must exist.
    pub fn open(path: &Path) -> Result<Arc<SqliteStore>, StoreError> {
        let writer = Connection::open(path).map_err(failed)?;
        configure(&writer).map_err(failed)?;
        writer.execute_batch(SCHEMA).map_err(failed)?;
        writer.execute_batch(moderation::SCHEMA).map_err(failed)?;
        let found: Option<i64> = writer
            .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
            .map_err(failed)?;
        match found {
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::Server(format!(
                    "the database has schema version {v}, newer than this build's {SCHEMA_VERSION}"
                )))
            }
            Some(_) => {}
            None => {
                writer
                    .execute(
                        "INSERT OR IGNORE INTO schema_version (version) VALUES (?1)",
                        [SCHEMA_VERSION],
                    )
                    .map_err(failed)?;
            }
        }
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let conn = Connection::open(path).map_err(failed)?;
            configure(&conn).map_err(failed)?;
            readers.push(Arc::new(Mutex::new(conn)));
        }
        Ok(Arc::new(SqliteStore {
            writer: Arc::new(Mutex::new(writer)),
            readers,
            next_reader: AtomicUsize::new(0),
        }))
    }

    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        blocking(self.writer.clone(), f).await
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        blocking(self.readers[i].clone(), f).await
    }
}

/// [`StoreError::NotFound`] unless the site exists (on the writer, so
/// nothing can create or remove it meanwhile).
fn require_site(c: &Connection, site: &str) -> Result<(), StoreError> {
    c.query_row("SELECT 1 FROM sites WHERE id = ?1", [site], |_| Ok(()))
        .optional()
        .map_err(failed)?
        .ok_or(StoreError::NotFound)
}

fn site_from_row(r: &Row<'_>) -> rusqlite::Result<(String, String, Vec<u8>, SiteLimits)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        SiteLimits {
            max_text_bytes: r.get(3)?,
            guest_messages: r.get(4)?,
            guest_window_secs: r.get(5)?,
        },
    ))
}

fn site(raw: (String, String, Vec<u8>, SiteLimits)) -> Result<SiteRecord, StoreError> {
    let (id, origins, hash, limits) = raw;
    site_record(id, &origins, &hash, limits)
}

fn raw_event(r: &Row<'_>) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        seq: r.get(0)?,
        kind: r.get(1)?,
        member_id: r.get(2)?,
        nick: r.get(3)?,
        text: r.get(4)?,
        client_id: r.get(5)?,
        deletes: r.get(6)?,
        at_ms: r.get(7)?,
    })
}

fn version_of(conn: &Connection, key: &RoomKey) -> Result<RoomVersion, StoreError> {
    let row: Option<(u32, u64)> = conn
        .query_row(
            "SELECT epoch, seq FROM rooms WHERE site = ?1 AND room = ?2",
            params![key.site(), key.room()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(failed)?;
    match row {
        // A row whose first write never committed has nothing to show.
        Some((epoch, seq)) if seq > 0 => Ok(RoomVersion::new(epoch, seq)),
        _ => Ok(RoomVersion::default()),
    }
}

fn events_where(
    conn: &Connection,
    sql_tail: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<Event>, StoreError> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE {sql_tail}");
    let mut stmt = conn.prepare_cached(&sql).map_err(failed)?;
    let rows = stmt
        .query_map(args, raw_event)
        .map_err(failed)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(failed)?;
    rows.into_iter().map(StoredEvent::decode).collect()
}

/// The room's version and, if `wanted` at that version, the events
/// `filter` selects, both from one snapshot.
fn snapshot(
    c: &mut Connection,
    key: &RoomKey,
    wanted: impl FnOnce(RoomVersion) -> bool,
    filter: &str,
    args: impl rusqlite::Params,
) -> Result<(Vec<Event>, RoomVersion), StoreError> {
    let tx = c.transaction().map_err(failed)?;
    let version = version_of(&tx, key)?;
    let events = if wanted(version) {
        events_where(&tx, filter, args)?
    } else {
        Vec::new()
    };
    tx.finish().map_err(failed)?;
    Ok((events, version))
}

/// Locks nothing by itself: the caller holds the writer connection inside
/// an IMMEDIATE transaction. Returns the room's `(epoch, seq)`, if it exists.
fn room_row(tx: &Connection, key: &RoomKey) -> Result<Option<(u32, u64)>, StoreError> {
    tx.query_row(
        "SELECT epoch, seq FROM rooms WHERE site = ?1 AND room = ?2",
        params![key.site(), key.room()],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .map_err(failed)
}

/// Writes event `e` of room `key`, leaving the room's seq as it was.
fn insert_row(tx: &Connection, key: &RoomKey, e: &Event) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO events (site, room, seq, kind, member_id, nick, text, client_id, deletes, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            key.site(),
            key.room(),
            seq_to_i64(e.seq),
            kind_code(e.kind),
            e.member_id,
            e.nick,
            e.text,
            e.client_id,
            e.deletes.map(seq_to_i64),
            e.at_ms,
        ])
    })
    .map_err(failed)?;
    Ok(())
}

/// Moves room `key` to `seq`.
fn set_seq(tx: &Connection, key: &RoomKey, seq: u64) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE rooms SET seq = ?3 WHERE site = ?1 AND room = ?2",
        params![key.site(), key.room(), seq_to_i64(seq)],
    )
    .map_err(failed)?;
    Ok(())
}

/// Writes event `e` of room `key` and moves the room to its seq.
fn insert_event(tx: &Connection, key: &RoomKey, e: &Event) -> Result<(), StoreError> {
    insert_row(tx, key, e)?;
    set_seq(tx, key, e.seq)
}

/// Appends a batch inside the writer's IMMEDIATE transaction: rooms
/// without a row get one, then the plan is written and committed.
fn append_batch(
    c: &mut Connection,
    batch: &[(RoomKey, NewMessage)],
) -> Result<Vec<Appended>, StoreError> {
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(failed)?;
    let mut rooms = BTreeMap::new();
    for key in batch::rooms_of(batch) {
        let (epoch, seq) = match room_row(&tx, &key)? {
            Some(row) => row,
            None => {
                let epoch = new_epoch();
                tx.execute(
                    "INSERT INTO rooms (site, room, epoch, seq) VALUES (?1, ?2, ?3, 0)",
                    params![key.site(), key.room(), epoch],
                )
                .map_err(failed)?;
                (epoch, 0)
            }
        };
        rooms.insert(key, RoomRow { epoch, seq });
    }
    let mut stored = HashMap::new();
    for (key, msg) in batch {
        let found = events_where(
            &tx,
            "site = ?1 AND room = ?2 AND member_id = ?3 AND client_id = ?4",
            params![key.site(), key.room(), msg.member_id, msg.client_id],
        )?;
        if let Some(event) = found.into_iter().next() {
            stored.insert(batch::identity(key, msg), event);
        }
    }
    let plan = batch::plan(batch, &rooms, &stored)?;
    if plan.inserts.is_empty() {
        return Ok(plan.answers);
    }
    for (key, event) in &plan.inserts {
        insert_row(&tx, key, event)?;
    }
    for (key, seq) in &plan.moved {
        set_seq(&tx, key, *seq)?;
    }
    tx.commit().map_err(failed)?;
    Ok(plan.answers)
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(failed))
            .await
    }

    async fn create_site(&self, site: &NewSite) -> Result<(), StoreError> {
        let site = site.clone();
        self.write(move |c| {
            let r = c.execute(
                "INSERT INTO sites (id, origins, secret_hash, max_text_bytes, guest_messages, guest_window_secs)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    site.id,
                    origins_to_json(&site.origins),
                    &site.secret_hash[..],
                    site.limits.max_text_bytes,
                    site.limits.guest_messages,
                    site.limits.guest_window_secs,
                ],
            );
            match r {
                Ok(_) => Ok(()),
                Err(e) if is_constraint(&e) => Err(StoreError::Conflict),
                Err(e) => Err(failed(e)),
            }
        })
        .await
    }

    async fn site(&self, id: &str) -> Result<Option<SiteRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| {
            let raw = c
                .query_row(
                    "SELECT id, origins, secret_hash, max_text_bytes, guest_messages, guest_window_secs
                     FROM sites WHERE id = ?1",
                    [id],
                    site_from_row,
                )
                .optional()
                .map_err(failed)?;
            raw.map(site).transpose()
        })
        .await
    }

    async fn list_sites(&self) -> Result<Vec<SiteRecord>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, origins, secret_hash, max_text_bytes, guest_messages, guest_window_secs
                     FROM sites ORDER BY id",
                )
                .map_err(failed)?;
            let rows = stmt
                .query_map([], site_from_row)
                .map_err(failed)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(failed)?;
            rows.into_iter().map(site).collect()
        })
        .await
    }

    async fn set_limits(&self, site: &str, limits: SiteLimits) -> Result<(), StoreError> {
        let site = site.to_owned();
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE sites SET max_text_bytes = ?2, guest_messages = ?3, guest_window_secs = ?4
                     WHERE id = ?1",
                    params![
                        site,
                        limits.max_text_bytes,
                        limits.guest_messages,
                        limits.guest_window_secs
                    ],
                )
                .map_err(failed)?;
            if n == 0 {
                Err(StoreError::NotFound)
            } else {
                Ok(())
            }
        })
        .await
    }

    async fn ban(&self, site: &str, member_id: &str) -> Result<(), StoreError> {
        let (site, member_id) = (site.to_owned(), member_id.to_owned());
        self.write(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO bans (site, member_id) VALUES (?1, ?2)",
                params![site, member_id],
            )
            .map_err(failed)?;
            Ok(())
        })
        .await
    }

    async fn is_banned(&self, site: &str, member_id: &str) -> Result<bool, StoreError> {
        let (site, member_id) = (site.to_owned(), member_id.to_owned());
        self.read(move |c| {
            c.query_row(
                "SELECT 1 FROM bans WHERE site = ?1 AND member_id = ?2",
                params![site, member_id],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(failed)
        })
        .await
    }

    async fn user_keys(&self, site: &str) -> Result<Vec<UserKey>, StoreError> {
        let site = site.to_owned();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT kid, alg, key_bytes FROM user_keys WHERE site = ?1 ORDER BY kid",
                )
                .map_err(failed)?;
            let rows = stmt
                .query_map(params![site], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                })
                .map_err(failed)?;
            let mut keys = Vec::new();
            for row in rows {
                let (kid, alg, key) = row.map_err(failed)?;
                keys.push(rows::user_key(kid, alg, key)?);
            }
            Ok(keys)
        })
        .await
    }

    async fn add_user_key(&self, site: &str, key: &UserKey) -> Result<(), StoreError> {
        let (site, key) = (site.to_owned(), key.clone());
        self.write(move |c| {
            let added = c
                .execute(
                    "INSERT OR IGNORE INTO user_keys (site, kid, alg, key_bytes) VALUES (?1, ?2, ?3, ?4)",
                    params![site, key.kid, key.alg.code(), key.key],
                )
                .map_err(failed)?;
            match added {
                0 => Err(StoreError::Conflict),
                _ => Ok(()),
            }
        })
        .await
    }

    async fn remove_user_key(&self, site: &str, kid: &str) -> Result<(), StoreError> {
        let (site, kid) = (site.to_owned(), kid.to_owned());
        self.write(move |c| {
            let removed = c
                .execute(
                    "DELETE FROM user_keys WHERE site = ?1 AND kid = ?2",
                    params![site, kid],
                )
                .map_err(failed)?;
            match removed {
                0 => Err(StoreError::NotFound),
                _ => Ok(()),
            }
        })
        .await
    }

    async fn append_messages(
        &self,
        batch: &[(RoomKey, NewMessage)],
    ) -> Result<Vec<Appended>, StoreError> {
        batch::check_size(batch)?;
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let batch = batch.to_vec();
        self.write(move |c| append_batch(c, &batch)).await
    }

    async fn delete_message(
        &self,
        key: &RoomKey,
        seq: u64,
        at_ms: i64,
    ) -> Result<Appended, StoreError> {
        let key = key.clone();
        self.write(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(failed)?;
            let Some((epoch, last)) = room_row(&tx, &key)? else {
                return Err(StoreError::NotFound);
            };
            let found: Option<(u8, bool)> = tx
                .query_row(
                    "SELECT kind, deleted FROM events WHERE site = ?1 AND room = ?2 AND seq = ?3",
                    params![key.site(), key.room(), seq_to_i64(seq)],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(failed)?;
            if deletion_target(found)? == Target::DeletedBefore {
                let existing = events_where(
                    &tx,
                    "site = ?1 AND room = ?2 AND deletes = ?3",
                    params![key.site(), key.room(), seq_to_i64(seq)],
                )?;
                return deleted_before(existing.into_iter().next(), RoomVersion::new(epoch, last));
            }
            let event = deletion_event(last + 1, seq, at_ms);
            insert_event(&tx, &key, &event)?;
            tx.execute(
                "UPDATE events SET deleted = 1 WHERE site = ?1 AND room = ?2 AND seq = ?3",
                params![key.site(), key.room(), seq_to_i64(seq)],
            )
            .map_err(failed)?;
            tx.commit().map_err(failed)?;
            Ok(Appended::written(event, epoch))
        })
        .await
    }

    async fn erase_member(
        &self,
        site: &str,
        member_id: &str,
        at_ms: i64,
    ) -> Result<Erased, StoreError> {
        let (site, member_id) = (site.to_owned(), member_id.to_owned());
        self.write(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(failed)?;
            let mut erased = Erased::default();
            let message = kind_code(EventKind::Message);
            let rooms: Vec<String> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT DISTINCT room FROM events
                         WHERE site = ?1 AND member_id = ?2 AND kind = ?3 AND text != ''",
                    )
                    .map_err(failed)?;
                let rows = stmt
                    .query_map(params![site, member_id, message], |r| r.get(0))
                    .map_err(failed)?;
                rows.collect::<rusqlite::Result<_>>().map_err(failed)?
            };
            for room in rooms {
                let key = RoomKey::new(&site, &room)
                    .map_err(|e| StoreError::Corrupt(format!("stored room {room:?}: {e}")))?;
                let Some((epoch, mut last)) = room_row(&tx, &key)? else {
                    continue;
                };
                let shown: Vec<i64> = {
                    let mut stmt = tx
                        .prepare_cached(
                            "SELECT seq FROM events WHERE site = ?1 AND room = ?2
                             AND member_id = ?3 AND kind = ?4 AND deleted = 0 ORDER BY seq",
                        )
                        .map_err(failed)?;
                    let rows = stmt
                        .query_map(params![site, room, member_id, message], |r| r.get(0))
                        .map_err(failed)?;
                    rows.collect::<rusqlite::Result<_>>().map_err(failed)?
                };
                for seq in &shown {
                    last += 1;
                    insert_event(&tx, &key, &deletion_event(last, *seq as u64, at_ms))?;
                }
                erased.messages += tx
                    .execute(
                        "UPDATE events SET deleted = 1, text = '', nick = ''
                         WHERE site = ?1 AND room = ?2 AND member_id = ?3 AND kind = ?4
                         AND text != ''",
                        params![site, room, member_id, message],
                    )
                    .map_err(failed)? as u64;
                if !shown.is_empty() {
                    erased.moved.push((key, RoomVersion::new(epoch, last)));
                }
            }
            tx.commit().map_err(failed)?;
            Ok(erased)
        })
        .await
    }

    async fn events_after(
        &self,
        key: &RoomKey,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Event>, RoomVersion), StoreError> {
        let key = key.clone();
        self.read(move |c| {
            snapshot(
                c,
                &key,
                |v| v.seq > after && limit > 0,
                "site = ?1 AND room = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4",
                params![
                    key.site(),
                    key.room(),
                    seq_to_i64(after),
                    limit_to_i64(limit)
                ],
            )
        })
        .await
    }

    async fn recent_messages(
        &self,
        key: &RoomKey,
        limit: usize,
    ) -> Result<(Vec<Event>, RoomVersion), StoreError> {
        let key = key.clone();
        self.read(move |c| {
            let (mut events, version) = snapshot(
                c,
                &key,
                |v| v.seq > 0 && limit > 0,
                "site = ?1 AND room = ?2 AND kind = ?3 AND deleted = 0 ORDER BY seq DESC LIMIT ?4",
                params![
                    key.site(),
                    key.room(),
                    kind_code(EventKind::Message),
                    limit_to_i64(limit)
                ],
            )?;
            events.reverse();
            Ok((events, version))
        })
        .await
    }

    async fn room_version(&self, key: &RoomKey) -> Result<RoomVersion, StoreError> {
        let key = key.clone();
        self.read(move |c| version_of(c, &key)).await
    }

    async fn rules(&self, site: &str) -> Result<Option<SiteRules>, StoreError> {
        let site = site.to_owned();
        self.read(move |c| {
            let raw: Option<String> = c
                .query_row(
                    "SELECT rules FROM site_rules WHERE site = ?1",
                    [site],
                    |r| r.get(0),
                )
                .optional()
                .map_err(failed)?;
            raw.as_deref().map(rules_from_json).transpose()
        })
        .await
    }

    async fn set_rules(&self, site: &str, rules: &SiteRules) -> Result<(), StoreError> {
        let (site, json) = (site.to_owned(), rules_to_json(rules));
        self.write(move |c| {
            require_site(c, &site)?;
            c.execute(
                "INSERT INTO site_rules (site, rules) VALUES (?1, ?2)
                 ON CONFLICT (site) DO UPDATE SET rules = excluded.rules",
                params![site, json],
            )
            .map_err(failed)?;
            Ok(())
        })
        .await
    }

    async fn room_slow_mode(&self, key: &RoomKey) -> Result<Option<u32>, StoreError> {
        let key = key.clone();
        self.read(move |c| {
            c.query_row(
                "SELECT secs FROM room_slow_mode WHERE site = ?1 AND room = ?2",
                params![key.site(), key.room()],
                |r| r.get(0),
            )
            .optional()
            .map_err(failed)
        })
        .await
    }

    async fn set_room_slow_mode(&self, key: &RoomKey, secs: Option<u32>) -> Result<(), StoreError> {
        let key = key.clone();
        self.write(move |c| {
            require_site(c, key.site())?;
            match secs {
                Some(secs) => c.execute(
                    "INSERT INTO room_slow_mode (site, room, secs) VALUES (?1, ?2, ?3)
                     ON CONFLICT (site, room) DO UPDATE SET secs = excluded.secs",
                    params![key.site(), key.room(), secs],
                ),
                None => c.execute(
                    "DELETE FROM room_slow_mode WHERE site = ?1 AND room = ?2",
                    params![key.site(), key.room()],
                ),
            }
            .map_err(failed)?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;

    fn open() -> (tempfile::TempDir, Arc<SqliteStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("chatty.db")).unwrap();
        (dir, store)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_suite() {
        let (_dir, store) = open();
        conformance::run_all(store).await;
    }

    #[tokio::test]
    async fn data_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chatty.db");
        let key = RoomKey::new("demo", "lobby").unwrap();
        let first = {
            let store = SqliteStore::open(&path).unwrap();
            let a = store
                .append_message(&key, conformance::message("m1", "c1", "hello"))
                .await
                .unwrap();
            a.version
        };
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.room_version(&key).await.unwrap(), first);
        let (events, _) = store.events_after(&key, 0, 10).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].text, "hello");
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chatty.db");
        drop(SqliteStore::open(&path).unwrap());
        let c = Connection::open(&path).unwrap();
        c.execute("INSERT INTO schema_version (version) VALUES (99)", [])
            .unwrap();
        drop(c);
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StoreError::Server(_))
        ));
    }
}
