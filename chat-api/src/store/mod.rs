//! The store: sites, their rules, bans and each room's append-only event log, behind one
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
//! event with `created == false`. Messages are appended in batches
//! ([`Store::append_messages`]): one transaction locks every room of the
//! batch (in primary-key order), looks up every identity at once, and
//! writes all of the batch or none of it; a single send is a batch of one.
//! A deletion is itself an event (kind
//! `Deletion`, `deletes: Some(seq)`); deleting twice returns the first
//! deletion.
//!
//! Identifiers are not validated here beyond what the columns hold: callers
//! validate site ids and room names ([`RoomKey`]), member ids (at most
//! [`MAX_MEMBER_ID_BYTES`]), client ids (at most [`MAX_CLIENT_ID_BYTES`]) and
//! nicknames (at most [`MAX_NICK_CHARS`] characters), and the build checks
//! that the limits of [`crate::validate`] and [`crate::config`] fit. A value
//! longer than its column makes MySQL refuse the write
//! ([`StoreError::Server`]).

use std::time::Duration;

use async_trait::async_trait;
use chatty_shared::wire::{Event, SiteLimits, SiteRules};
use chatty_shared::RoomKey;
use chatty_shared::RoomVersion;

use crate::host_token::UserKey;

mod batch;
#[cfg(test)]
pub(crate) mod conformance;
mod moderation;
mod mysql;
mod rows;
mod sqlite;

pub use batch::MAX_BATCH;
pub use moderation::{Moderation, ModerationStore, Standing, MAX_AUDIT_LIMIT};
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

// What the API accepts fits the columns.
const _: () = {
    assert!(crate::validate::MAX_CLIENT_ID <= MAX_CLIENT_ID_BYTES);
    assert!(crate::validate::MAX_MEMBER_ID <= MAX_MEMBER_ID_BYTES);
    assert!(crate::validate::MAX_NICK_CHARS <= MAX_NICK_CHARS);
    assert!(crate::config::MAX_TEXT_BYTES_LIMIT as usize <= MAX_TEXT_BYTES);
};

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
    fn written(event: Event, epoch: u32) -> Appended {
        Appended {
            version: RoomVersion::new(epoch, event.seq),
            event,
            created: true,
        }
    }

    /// An event written before, the room at `version`.
    fn existing(event: Event, version: RoomVersion) -> Appended {
        Appended {
            event,
            version,
            created: false,
        }
    }
}

/// What erasing a member did: the messages whose text is gone and the
/// rooms whose logs moved (a deletion event per message still shown), at
/// their new versions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erased {
    pub messages: u64,
    pub moved: Vec<(RoomKey, RoomVersion)>,
}

/// Why a store operation failed: a kind, each with what the backend said.
///
/// Only [`StoreError::NotFound`] and [`StoreError::Conflict`] are answers;
/// the rest are failures, told apart so that retries are decided by kind
/// ([`StoreError::retry_may_help`]) and corrupt data is not mistaken for an
/// outage. Cloned when one failure answers every send of a batch.
#[derive(Debug, Clone, thiserror::Error)]
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

/// The source of truth for sites, bans and room event logs (and, in
/// [`ModerationStore`], moderation's own tables).
#[async_trait]
pub trait Store: ModerationStore + Send + Sync + 'static {
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
    /// The site's user-token keys, ordered by id.
    async fn user_keys(&self, site: &str) -> Result<Vec<UserKey>, StoreError>;
    /// Registers a user-token key; [`StoreError::Conflict`] if the site has
    /// a key of that id.
    async fn add_user_key(&self, site: &str, key: &UserKey) -> Result<(), StoreError>;
    /// [`StoreError::NotFound`] if the site has no key of that id.
    async fn remove_user_key(&self, site: &str, kid: &str) -> Result<(), StoreError>;
    /// Appends a message, or returns the original for a retried
    /// `(member_id, client_id)`. Durable when it returns `Ok`. A batch of
    /// one; the API itself only writes batches (`chat/writer.rs`).
    #[cfg(test)]
    async fn append_message(&self, key: &RoomKey, msg: NewMessage) -> Result<Appended, StoreError> {
        let mut answers = self.append_messages(&[(key.clone(), msg)]).await?;
        answers
            .pop()
            .ok_or_else(|| StoreError::Server("a batch of one had no answer".into()))
    }
    /// Appends messages to any rooms in one transaction, all or none; the
    /// answers are in the batch's order. Each message is appended as by
    /// [`Store::append_message`], in the batch's order: the new ones of a
    /// room get its next seqs, a retry of a stored message returns the
    /// original, and a message whose `(room, member_id, client_id)` came
    /// earlier in the batch returns that earlier one, `created == false`.
    /// At most [`MAX_BATCH`] messages. Durable when it returns `Ok`.
    async fn append_messages(
        &self,
        batch: &[(RoomKey, NewMessage)],
    ) -> Result<Vec<Appended>, StoreError>;
    /// Appends the deletion of message `seq`. [`StoreError::NotFound`] if
    /// there is no such message (or `seq` is itself a deletion); deleting a
    /// deleted message returns the existing deletion with `created == false`.
    async fn delete_message(
        &self,
        key: &RoomKey,
        seq: u64,
        at_ms: i64,
    ) -> Result<Appended, StoreError>;
    /// Erases what `member_id` wrote on `site`, in every room: each of its
    /// messages still shown gets a deletion event, and every one of its
    /// messages loses its text and nick in the store. Erasing again finds
    /// nothing more.
    async fn erase_member(
        &self,
        site: &str,
        member_id: &str,
        at_ms: i64,
    ) -> Result<Erased, StoreError>;
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

    // The site's rules (table `site_rules`) and rooms' own slow mode
    // (table `room_slow_mode`). Values are checked by the caller.

    /// The site's rules; `None` when never set.
    async fn rules(&self, site: &str) -> Result<Option<SiteRules>, StoreError>;
    /// Replaces the site's rules. [`StoreError::NotFound`] if the site does
    /// not exist.
    async fn set_rules(&self, site: &str, rules: &SiteRules) -> Result<(), StoreError>;
    /// A room's own slow mode in seconds (0: off in this room); `None`
    /// when the room follows the site's.
    async fn room_slow_mode(&self, key: &RoomKey) -> Result<Option<u32>, StoreError>;
    /// Sets (`Some`) or removes (`None`) a room's own slow mode.
    /// [`StoreError::NotFound`] if the site does not exist.
    async fn set_room_slow_mode(&self, key: &RoomKey, secs: Option<u32>) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
