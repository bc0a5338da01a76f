//! The MySQL event log: appending batches of messages and deletions under
//! the rooms' row locks, and reading events with the room's version in one
//! statement.

use std::collections::{BTreeMap, HashMap};

use chatty_shared::wire::{Event, EventKind};
use chatty_shared::RoomKey;
use chatty_shared::RoomVersion;
use mysql_async::prelude::{FromRow, Queryable};
use mysql_async::{IsolationLevel, Params, Pool, Row, Transaction, TxOpts, Value};

use super::{db_error, decode, MysqlStore};
use crate::store::batch::{check_size, identity, plan, rooms_of, Identity, Plan, RoomRow};
use crate::store::rows::{
    deleted_before, deletion_event, deletion_target, kind_code, limit_to_i64, new_epoch,
    StoredEvent, Target,
};
use crate::store::{Appended, Erased, NewMessage, StoreError};

/// The event columns, prefixed with `e.`, in [`RawEvent`] order.
const EVENT_COLUMNS: &str =
    "e.seq, e.kind, e.member_id, e.nick, e.text, e.client_id, e.deletes, e.at_ms";

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

fn stored_event(raw: RawEvent) -> StoredEvent {
    let (seq, kind, member_id, nick, text, client_id, deletes, at_ms) = raw;
    StoredEvent {
        seq,
        kind,
        member_id,
        nick,
        text,
        client_id,
        deletes,
        at_ms,
    }
}

impl FromRow for StoredEvent {
    fn from_row_opt(row: Row) -> Result<Self, mysql_async::FromRowError> {
        RawEvent::from_row_opt(row).map(stored_event)
    }
}

/// The event matching `filter`, read inside the write transaction.
async fn find_event(
    tx: &mut Transaction<'_>,
    filter: &str,
    params: impl Into<Params> + Send,
) -> Result<Option<Event>, StoreError> {
    let row: Option<Row> = tx
        .exec_first(
            format!("SELECT {EVENT_COLUMNS} FROM events e WHERE {filter}"),
            params,
        )
        .await
        .map_err(db_error)?;
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

/// Runs a version-and-events join, `SELECT r.epoch, r.seq, {EVENT_COLUMNS}
/// FROM rooms r` then `tail`: the events, and the room's version from the
/// same statement.
async fn joined(
    s: &MysqlStore,
    tail: &str,
    params: impl Into<Params> + Send,
) -> Result<(Vec<Event>, RoomVersion), StoreError> {
    let sql = format!("SELECT r.epoch, r.seq, {EVENT_COLUMNS} FROM rooms r {tail}");
    let rows: Vec<Row> = s.conn().await?.exec(sql, params).await.map_err(db_error)?;
    let mut v = RoomVersion::default();
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let (epoch, seq, e_seq, kind, member_id, nick, text, client_id, deletes, at_ms): JoinedRow =
            decode(row)?;
        v = version(epoch, seq);
        if let (Some(e_seq), Some(kind), Some(member_id), Some(nick), Some(text), Some(at_ms)) =
            (e_seq, kind, member_id, nick, text, at_ms)
        {
            let raw = (
                e_seq, kind, member_id, nick, text, client_id, deletes, at_ms,
            );
            events.push(stored_event(raw).decode()?);
        }
    }
    Ok((events, v))
}

pub(super) async fn insert_event(
    tx: &mut Transaction<'_>,
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
pub(super) enum Locked {
    /// The room exists; its row is locked until the transaction ends.
    Room(Transaction<'static>, u32, u64),
    /// The room has no row yet.
    Missing,
}

/// Starts a write transaction and locks the room's row.
pub(super) async fn lock_room(pool: &Pool, key: &RoomKey) -> Result<Locked, StoreError> {
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

/// `n` copies of `tuple` (`(?, ?)`, say), comma-separated.
fn tuples(tuple: &str, n: usize) -> String {
    vec![tuple; n].join(", ")
}

/// Starts a write transaction and locks the rows of `rooms` (given in
/// primary-key order) in one statement, in primary-key order, so that two
/// writers locking overlapping sets never wait on each other in a cycle.
/// Returns the rows found; a room missing from them has no row yet.
async fn lock_rooms(
    pool: &Pool,
    rooms: &[RoomKey],
) -> Result<(Transaction<'static>, BTreeMap<RoomKey, RoomRow>), StoreError> {
    let mut tx = pool.start_transaction(write_tx()).await.map_err(db_error)?;
    let sql = format!(
        "SELECT site, room, epoch, seq FROM rooms WHERE (site, room) IN ({})
         ORDER BY site, room FOR UPDATE",
        tuples("(?, ?)", rooms.len())
    );
    let params: Vec<Value> = rooms
        .iter()
        .flat_map(|k| [k.site().into(), k.room().into()])
        .collect();
    let rows: Vec<Row> = tx.exec(sql, params).await.map_err(db_error)?;
    let mut locked = BTreeMap::new();
    for row in rows {
        let (site, room, epoch, seq): (String, String, u32, u64) = decode(row)?;
        let key = RoomKey::new(&site, &room)
            .map_err(|e| StoreError::Corrupt(format!("stored room {site}/{room}: {e}")))?;
        locked.insert(key, RoomRow { epoch, seq });
    }
    Ok((tx, locked))
}

/// Locks every room of a batch, making the rows of rooms never written
/// first: outside the write transaction, so concurrent first writers never
/// deadlock (the loser's insert is ignored and both then queue on the row
/// lock).
async fn lock_batch_rooms(
    s: &MysqlStore,
    rooms: &[RoomKey],
) -> Result<(Transaction<'static>, BTreeMap<RoomKey, RoomRow>), StoreError> {
    for _ in 0..2 {
        let (tx, locked) = lock_rooms(&s.pool, rooms).await?;
        let missing: Vec<&RoomKey> = rooms.iter().filter(|k| !locked.contains_key(k)).collect();
        if missing.is_empty() {
            return Ok((tx, locked));
        }
        tx.rollback().await.map_err(db_error)?;
        let sql = format!(
            "INSERT IGNORE INTO rooms (site, room, epoch, seq) VALUES {}",
            tuples("(?, ?, ?, 0)", missing.len())
        );
        let params: Vec<Value> = missing
            .iter()
            .flat_map(|k| [k.site().into(), k.room().into(), new_epoch().into()])
            .collect();
        s.conn()
            .await?
            .exec_drop(sql, params)
            .await
            .map_err(db_error)?;
    }
    Err(StoreError::Server(
        "a room row vanished while writing".into(),
    ))
}

/// An event row with its room first: site, room, then [`RawEvent`]'s columns.
type RoomEventRow = (
    String,
    String,
    u64,
    u8,
    String,
    String,
    String,
    Option<String>,
    Option<u64>,
    i64,
);

/// The stored messages the batch names, by identity, in one statement.
async fn find_stored(
    tx: &mut Transaction<'_>,
    batch: &[(RoomKey, NewMessage)],
) -> Result<HashMap<Identity, Event>, StoreError> {
    let mut ids: Vec<Identity> = batch.iter().map(|(k, m)| identity(k, m)).collect();
    ids.sort_unstable();
    ids.dedup();
    let sql = format!(
        "SELECT e.site, e.room, {EVENT_COLUMNS} FROM events e
         WHERE (e.site, e.room, e.member_id, e.client_id) IN ({})",
        tuples("(?, ?, ?, ?)", ids.len())
    );
    let params: Vec<Value> = ids
        .iter()
        .flat_map(|(k, member, client)| {
            [
                k.site().into(),
                k.room().into(),
                member.as_str().into(),
                client.as_str().into(),
            ]
        })
        .collect();
    let rows: Vec<Row> = tx.exec(sql, params).await.map_err(db_error)?;
    let mut stored = HashMap::with_capacity(rows.len());
    for row in rows {
        let (site, room, seq, kind, member_id, nick, text, client_id, deletes, at_ms): RoomEventRow =
            decode(row)?;
        let key = RoomKey::new(&site, &room)
            .map_err(|e| StoreError::Corrupt(format!("stored room {site}/{room}: {e}")))?;
        let event =
            stored_event((seq, kind, member_id, nick, text, client_id, deletes, at_ms)).decode()?;
        let client = event.client_id.clone().unwrap_or_default();
        stored.insert((key, event.member_id.clone(), client), event);
    }
    Ok(stored)
}

/// Writes a batch's new events in one statement and moves its rooms in
/// another.
async fn write_plan(tx: &mut Transaction<'_>, plan: &Plan) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO events (site, room, seq, kind, member_id, nick, text, client_id, deletes, at_ms)
         VALUES {}",
        tuples("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", plan.inserts.len())
    );
    let mut params: Vec<Value> = Vec::with_capacity(plan.inserts.len() * 10);
    for (key, e) in &plan.inserts {
        params.extend([
            key.site().into(),
            key.room().into(),
            e.seq.into(),
            kind_code(e.kind).into(),
            e.member_id.as_str().into(),
            e.nick.as_str().into(),
            e.text.as_str().into(),
            e.client_id.as_deref().into(),
            e.deletes.into(),
            e.at_ms.into(),
        ]);
    }
    tx.exec_drop(sql, params).await.map_err(db_error)?;
    let sql = format!(
        "UPDATE rooms SET seq = CASE {} END WHERE (site, room) IN ({})",
        vec!["WHEN site = ? AND room = ? THEN ?"; plan.moved.len()].join(" "),
        tuples("(?, ?)", plan.moved.len())
    );
    let mut params: Vec<Value> = Vec::with_capacity(plan.moved.len() * 5);
    for (key, seq) in &plan.moved {
        params.extend([key.site().into(), key.room().into(), (*seq).into()]);
    }
    for (key, _) in &plan.moved {
        params.extend([key.site().into(), key.room().into()]);
    }
    tx.exec_drop(sql, params).await.map_err(db_error)
}

/// Appends a batch of messages in one transaction: the rooms locked in one
/// statement, the batch's identities looked up in one, the new events
/// inserted in one, the rooms' seqs moved in one, one commit.
pub(super) async fn append_batch(
    s: &MysqlStore,
    batch: &[(RoomKey, NewMessage)],
) -> Result<Vec<Appended>, StoreError> {
    check_size(batch)?;
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let (mut tx, rooms) = lock_batch_rooms(s, &rooms_of(batch)).await?;
    let stored = find_stored(&mut tx, batch).await?;
    let plan = plan(batch, &rooms, &stored)?;
    if plan.inserts.is_empty() {
        tx.rollback().await.map_err(db_error)?;
        return Ok(plan.answers);
    }
    write_plan(&mut tx, &plan).await?;
    tx.commit().await.map_err(db_error)?;
    Ok(plan.answers)
}

/// Starts a write transaction on the room's locked row, making the row
/// first when the room was never written. The row is created outside the
/// write transaction, so concurrent first writers never deadlock; the
/// loser's insert is ignored and both then queue on the row lock.
pub(super) async fn lock_new_room(
    s: &MysqlStore,
    key: &RoomKey,
) -> Result<(Transaction<'static>, u32, u64), StoreError> {
    for _ in 0..2 {
        match lock_room(&s.pool, key).await? {
            Locked::Room(tx, epoch, seq) => return Ok((tx, epoch, seq)),
            Locked::Missing => {
                s.conn()
                    .await?
                    .exec_drop(
                        "INSERT IGNORE INTO rooms (site, room, epoch, seq) VALUES (?, ?, ?, 0)",
                        (key.site(), key.room(), new_epoch()),
                    )
                    .await
                    .map_err(db_error)?;
            }
        }
    }
    Err(StoreError::Server(
        "the room row vanished while writing".into(),
    ))
}

/// Appends the deletion of message `seq`, or finds the earlier one.
pub(super) async fn delete(
    s: &MysqlStore,
    key: &RoomKey,
    seq: u64,
    at_ms: i64,
) -> Result<Appended, StoreError> {
    let (mut tx, epoch, last) = match lock_room(&s.pool, key).await? {
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
        let existing = find_event(
            &mut tx,
            "e.site = ? AND e.room = ? AND e.deletes = ?",
            (key.site(), key.room(), seq),
        )
        .await?;
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

/// Erases a member's messages on a site, room by room (each room in its
/// own transaction, its row locked as for a send).
pub(super) async fn erase(
    s: &MysqlStore,
    site: &str,
    member_id: &str,
    at_ms: i64,
) -> Result<Erased, StoreError> {
    let message = kind_code(EventKind::Message);
    let rooms: Vec<String> = s
        .conn()
        .await?
        .exec(
            "SELECT DISTINCT room FROM events
             WHERE site = ? AND member_id = ? AND kind = ? AND text != ''",
            (site, member_id, message),
        )
        .await
        .map_err(db_error)?;
    let mut erased = Erased::default();
    for room in rooms {
        let key = RoomKey::new(site, &room)
            .map_err(|e| StoreError::Corrupt(format!("stored room {room:?}: {e}")))?;
        let (mut tx, epoch, mut last) = match lock_room(&s.pool, &key).await? {
            Locked::Room(tx, epoch, last) => (tx, epoch, last),
            Locked::Missing => continue,
        };
        let shown: Vec<u64> = tx
            .exec(
                "SELECT seq FROM events WHERE site = ? AND room = ? AND member_id = ?
                 AND kind = ? AND deleted = 0 ORDER BY seq",
                (site, &room, member_id, message),
            )
            .await
            .map_err(db_error)?;
        for seq in &shown {
            last += 1;
            insert_event(&mut tx, &key, &deletion_event(last, *seq, at_ms)).await?;
        }
        tx.exec_drop(
            "UPDATE events SET deleted = 1, text = '', nick = ''
             WHERE site = ? AND room = ? AND member_id = ? AND kind = ? AND text != ''",
            (site, &room, member_id, message),
        )
        .await
        .map_err(db_error)?;
        erased.messages += tx.affected_rows();
        tx.commit().await.map_err(db_error)?;
        if !shown.is_empty() {
            erased.moved.push((key, version(epoch, last)));
        }
    }
    Ok(erased)
}

/// Up to `limit` (at least 1) events after `after`, and the room's
/// version, from one statement.
pub(super) async fn events_after(
    s: &MysqlStore,
    key: &RoomKey,
    after: u64,
    limit: usize,
) -> Result<(Vec<Event>, RoomVersion), StoreError> {
    joined(
        s,
        "LEFT JOIN events e ON e.site = r.site AND e.room = r.room AND e.seq > ?
         WHERE r.site = ? AND r.room = ?
         ORDER BY e.seq LIMIT ?",
        (after, key.site(), key.room(), limit_to_i64(limit)),
    )
    .await
}

/// The last `limit` (at least 1) live messages, oldest first, and the
/// room's version, from one statement.
pub(super) async fn recent_messages(
    s: &MysqlStore,
    key: &RoomKey,
    limit: usize,
) -> Result<(Vec<Event>, RoomVersion), StoreError> {
    let (mut events, v) = joined(
        s,
        "LEFT JOIN events e ON e.site = r.site AND e.room = r.room
             AND e.kind = ? AND e.deleted = 0
         WHERE r.site = ? AND r.room = ?
         ORDER BY e.seq DESC LIMIT ?",
        (
            kind_code(EventKind::Message),
            key.site(),
            key.room(),
            limit_to_i64(limit),
        ),
    )
    .await?;
    events.reverse();
    Ok((events, v))
}

/// The room's version; `(0, 0)` for a room never written.
pub(super) async fn room_version(s: &MysqlStore, key: &RoomKey) -> Result<RoomVersion, StoreError> {
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
}
