//! The store: sites, bans and each room's append-only event log, behind one
//! trait with a MySQL backend (cluster mode) and a SQLite backend (embedded).
//!
//! Every room is a log of events numbered 1, 2, 3 … by `seq`. The seq is
//! assigned inside the write transaction while the room's row is locked, so
//! writes to one room are serialised and no reader can ever see seq `n + 1`
//! before seq `n`. A room's row (and its random, non-zero epoch) is created
//! by its first write; reading never creates a room, and a room never written
//! to has version `(0, 0)`.
//!
//! Sends are idempotent: a message is identified by `(site, room, member_id,
//! client_id)`, checked under the same lock, so a retry returns the original
//! event with `created == false`. A deletion is itself an event (kind
//! `Deletion`, `deletes: Some(seq)`); deleting twice returns the first
//! deletion.
//!
//! Identifiers are not validated here beyond what the columns hold: callers
//! validate site ids and room names ([`RoomKey`]), member ids (at most
//! [`MAX_MEMBER_ID_BYTES`]), client ids (at most [`MAX_CLIENT_ID_BYTES`]) and
//! nicknames (at most [`MAX_NICK_CHARS`] characters). A value longer than its
//! column makes MySQL refuse the write ([`StoreError::Server`]).

use std::time::Duration;

use async_trait::async_trait;
use chatty_shared::etag::RoomVersion;
use chatty_shared::room::RoomKey;
use chatty_shared::wire::{Event, EventKind, SiteLimits};

pub mod conformance;
pub mod mysql;
pub mod sqlite;

pub use mysql::MysqlStore;
pub use sqlite::SqliteStore;

/// Longest member id the store holds.
pub const MAX_MEMBER_ID_BYTES: usize = 128;
/// Longest client id the store holds.
pub const MAX_CLIENT_ID_BYTES: usize = 128;
/// Longest nickname (in characters) the store holds.
pub const MAX_NICK_CHARS: usize = 255;
/// Longest message text (in bytes) the store holds (MySQL `MEDIUMTEXT`).
pub const MAX_TEXT_BYTES: usize = 16 * 1024 * 1024 - 1;

/// A site to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSite {
    pub id: String,
    /// Origins allowed to embed the site's chat (`frame-ancestors`).
    pub origins: Vec<String>,
    /// SHA-256 of the site owner's admin secret.
    pub secret_hash: [u8; 32],
    pub limits: SiteLimits,
}

/// A stored site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteRecord {
    pub id: String,
    pub origins: Vec<String>,
    pub secret_hash: [u8; 32],
    pub limits: SiteLimits,
}

/// A message to append to a room's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub member_id: String,
    pub nick: String,
    pub text: String,
    /// The sender's idempotency key.
    pub client_id: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
}

/// The result of a write to a room's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The stored event (the original one for a retry).
    pub event: Event,
    /// The room's version right after the write (its current version for a
    /// retry).
    pub version: RoomVersion,
    /// False when nothing was written: an idempotent retry, or a message
    /// already deleted.
    pub created: bool,
}

impl Appended {
    /// A new event, the room (of epoch `epoch`) now at its seq.
    pub(crate) fn written(event: Event, epoch: u32) -> Appended {
        Appended {
            version: RoomVersion::new(epoch, event.seq),
            event,
            created: true,
        }
    }

    /// An event written before, the room at `version`.
    pub(crate) fn existing(event: Event, version: RoomVersion) -> Appended {
        Appended {
            event,
            version,
            created: false,
        }
    }
}

/// Why a store operation failed: a kind, each with what the backend said.
///
/// Only [`StoreError::NotFound`] and [`StoreError::Conflict`] are answers;
/// the rest are failures, told apart so that retries are decided by kind
/// ([`StoreError::retry_may_help`]) and corrupt data is not mistaken for an
/// outage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached, or the connection broke mid-call.
    #[error("store connection failed: {0}")]
    Connection(String),
    /// No answer within the time allowed.
    #[error("store did not answer within {0:?}")]
    Timeout(Duration),
    /// The database refused or failed the operation (a server error, a
    /// full disk, a schema newer than this build …).
    #[error("store failed: {0}")]
    Server(String),
    /// A stored value this build cannot read: a bug or a damaged database,
    /// not a passing outage.
    #[error("corrupt data in the store: {0}")]
    Corrupt(String),
    /// No such site or message.
    #[error("not found")]
    NotFound,
    /// The thing to create exists already.
    #[error("already exists")]
    Conflict,
}

impl StoreError {
    /// Whether the same call may succeed on a fresh connection: the pooled
    /// one broke (the server restarted, say), not the query.
    pub fn retry_may_help(&self) -> bool {
        matches!(self, StoreError::Connection(_))
    }

    /// Whether the store is down or slow, as opposed to answering or
    /// holding data it cannot read.
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            StoreError::Connection(_) | StoreError::Timeout(_) | StoreError::Server(_)
        )
    }
}

/// The source of truth for sites, bans and room event logs.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reachability, for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Creates a site; [`StoreError::Conflict`] if the id exists.
    async fn create_site(&self, site: &NewSite) -> Result<(), StoreError>;
    async fn site(&self, id: &str) -> Result<Option<SiteRecord>, StoreError>;
    /// Every site, ordered by id.
    async fn list_sites(&self) -> Result<Vec<SiteRecord>, StoreError>;
    /// [`StoreError::NotFound`] if the site does not exist.
    async fn set_limits(&self, site: &str, limits: SiteLimits) -> Result<(), StoreError>;
    /// Bans a member id from a site (idempotent).
    async fn ban(&self, site: &str, member_id: &str) -> Result<(), StoreError>;
    async fn is_banned(&self, site: &str, member_id: &str) -> Result<bool, StoreError>;
    /// Appends a message, or returns the original for a retried
    /// `(member_id, client_id)`. Durable when it returns `Ok`.
    async fn append_message(&self, key: &RoomKey, msg: NewMessage) -> Result<Appended, StoreError>;
    /// Appends the deletion of message `seq`. [`StoreError::NotFound`] if
    /// there is no such message (or `seq` is itself a deletion); deleting a
    /// deleted message returns the existing deletion with `created == false`.
    async fn delete_message(
        &self,
        key: &RoomKey,
        seq: u64,
        at_ms: i64,
    ) -> Result<Appended, StoreError>;
    /// Up to `limit` events with seq greater than `after`, in seq order, and
    /// the room's current version, both read from one snapshot (so the
    /// version is never older than the events).
    async fn events_after(
        &self,
        key: &RoomKey,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Event>, RoomVersion), StoreError>;
    /// The last `limit` messages not deleted, oldest first, and the room's
    /// current version, from one snapshot.
    async fn recent_messages(
        &self,
        key: &RoomKey,
        limit: usize,
    ) -> Result<(Vec<Event>, RoomVersion), StoreError>;
    /// `(0, 0)` for a room never written; never creates a room.
    async fn room_version(&self, key: &RoomKey) -> Result<RoomVersion, StoreError>;
}

/// Event kinds as stored (a small integer column).
pub(crate) fn kind_code(kind: EventKind) -> u8 {
    match kind {
        EventKind::Message => 0,
        EventKind::Deletion => 1,
    }
}

fn kind_from_code(code: u8) -> Result<EventKind, StoreError> {
    match code {
        0 => Ok(EventKind::Message),
        1 => Ok(EventKind::Deletion),
        other => Err(StoreError::Corrupt(format!("unknown event kind {other}"))),
    }
}

/// An event as both stores read it, its kind still the stored code.
#[derive(Debug)]
pub(crate) struct StoredEvent {
    pub(crate) seq: u64,
    pub(crate) kind: u8,
    pub(crate) member_id: String,
    pub(crate) nick: String,
    pub(crate) text: String,
    pub(crate) client_id: Option<String>,
    pub(crate) deletes: Option<u64>,
    pub(crate) at_ms: i64,
}

impl StoredEvent {
    /// The event, or [`StoreError::Corrupt`] for an unknown kind.
    pub(crate) fn decode(self) -> Result<Event, StoreError> {
        Ok(Event {
            seq: self.seq,
            kind: kind_from_code(self.kind)?,
            member_id: self.member_id,
            nick: self.nick,
            text: self.text,
            client_id: self.client_id,
            deletes: self.deletes,
            at_ms: self.at_ms,
        })
    }
}

/// Message `msg` as event `seq` of its room.
pub(crate) fn message_event(seq: u64, msg: &NewMessage) -> Event {
    Event {
        seq,
        kind: EventKind::Message,
        member_id: msg.member_id.clone(),
        nick: msg.nick.clone(),
        text: msg.text.clone(),
        client_id: Some(msg.client_id.clone()),
        deletes: None,
        at_ms: msg.at_ms,
    }
}

/// The deletion of message `deletes` as event `seq` of its room.
pub(crate) fn deletion_event(seq: u64, deletes: u64, at_ms: i64) -> Event {
    Event {
        seq,
        kind: EventKind::Deletion,
        member_id: String::new(),
        nick: String::new(),
        text: String::new(),
        client_id: None,
        deletes: Some(deletes),
        at_ms,
    }
}

/// What a deletion finds at the seq it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// A message not deleted yet.
    Live,
    /// A message deleted already: the answer is its deletion event.
    DeletedBefore,
}

/// The target of a deletion from its row (kind code, deleted), if any;
/// [`StoreError::NotFound`] unless it is a message.
pub(crate) fn deletion_target(found: Option<(u8, bool)>) -> Result<Target, StoreError> {
    match found {
        Some((kind, deleted)) if kind_from_code(kind)? == EventKind::Message => Ok(if deleted {
            Target::DeletedBefore
        } else {
            Target::Live
        }),
        _ => Err(StoreError::NotFound),
    }
}

/// The answer to deleting a message deleted already: its deletion event,
/// which must exist.
pub(crate) fn deleted_before(
    existing: Option<Event>,
    version: RoomVersion,
) -> Result<Appended, StoreError> {
    let event = existing
        .ok_or_else(|| StoreError::Corrupt("a deleted message has no deletion event".into()))?;
    Ok(Appended::existing(event, version))
}

/// A site as read from its row.
pub(crate) fn site_record(
    id: String,
    origins: &str,
    secret_hash: &[u8],
    limits: SiteLimits,
) -> Result<SiteRecord, StoreError> {
    Ok(SiteRecord {
        id,
        origins: origins_from_json(origins)?,
        secret_hash: hash_from_bytes(secret_hash)?,
        limits,
    })
}

/// A random epoch for a new room: never 0, which means "no log".
pub(crate) fn new_epoch() -> u32 {
    loop {
        let e: u32 = rand::random();
        if e != 0 {
            return e;
        }
    }
}

/// A client-supplied seq or cursor as the signed 64-bit integer the
/// databases store; anything beyond `i64::MAX` is past every stored seq.
pub(crate) fn seq_to_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// A page size as a SQL `LIMIT`.
pub(crate) fn limit_to_i64(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The origins list as stored (a JSON array).
pub(crate) fn origins_to_json(origins: &[String]) -> String {
    serde_json::to_string(origins).unwrap_or_else(|_| "[]".to_owned())
}

fn origins_from_json(s: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("bad origins: {e}")))
}

fn hash_from_bytes(b: &[u8]) -> Result<[u8; 32], StoreError> {
    b.try_into()
        .map_err(|_| StoreError::Corrupt("bad secret hash".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for k in [EventKind::Message, EventKind::Deletion] {
            assert_eq!(kind_from_code(kind_code(k)).unwrap(), k);
        }
        assert!(matches!(kind_from_code(7), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn only_a_broken_connection_is_worth_a_retry() {
        let cases = [
            (StoreError::Connection("reset".into()), true, true),
            (StoreError::Timeout(Duration::from_millis(600)), false, true),
            (StoreError::Server("disk full".into()), false, true),
            (StoreError::Corrupt("bad kind".into()), false, false),
            (StoreError::NotFound, false, false),
            (StoreError::Conflict, false, false),
        ];
        for (e, retry, outage) in cases {
            assert_eq!((e.retry_may_help(), e.is_outage()), (retry, outage), "{e}");
        }
    }

    #[test]
    fn epochs_are_never_zero() {
        for _ in 0..1000 {
            assert_ne!(new_epoch(), 0);
        }
    }

    #[test]
    fn seqs_and_limits_saturate() {
        assert_eq!(seq_to_i64(5), 5);
        assert_eq!(seq_to_i64(u64::MAX), i64::MAX);
        assert_eq!(limit_to_i64(usize::MAX), i64::MAX);
    }

    #[test]
    fn origins_round_trip() {
        let o = vec![
            "https://a.example".to_owned(),
            "http://localhost:*".to_owned(),
        ];
        assert_eq!(origins_from_json(&origins_to_json(&o)).unwrap(), o);
        assert!(origins_from_json("nope").is_err());
        assert!(hash_from_bytes(&[0; 31]).is_err());
        assert_eq!(hash_from_bytes(&[7; 32]).unwrap(), [7; 32]);
    }
}
