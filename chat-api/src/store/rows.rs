//! What both backends share: events, kinds, seqs, origins and secret
//! hashes in their stored form, and the events a write appends.

use chatty_shared::wire::{Event, EventKind, SiteLimits, SiteRules};
use chatty_shared::RoomVersion;

use super::{Appended, NewMessage, SiteRecord, StoreError};
use crate::host_token::{KeyAlg, UserKey};

/// Event kinds as stored (a small integer column).
pub(super) fn kind_code(kind: EventKind) -> u8 {
    match kind {
        EventKind::Message => 0,
        EventKind::Deletion => 1,
        EventKind::Moderation => 2,
    }
}

pub(super) fn kind_from_code(code: u8) -> Result<EventKind, StoreError> {
    match code {
        0 => Ok(EventKind::Message),
        1 => Ok(EventKind::Deletion),
        2 => Ok(EventKind::Moderation),
        other => Err(StoreError::Corrupt(format!("unknown event kind {other}"))),
    }
}

/// An event as both stores read it, its kind still the stored code.
#[derive(Debug)]
pub(super) struct StoredEvent {
    pub(super) seq: u64,
    pub(super) kind: u8,
    pub(super) member_id: String,
    pub(super) nick: String,
    pub(super) text: String,
    pub(super) client_id: Option<String>,
    pub(super) deletes: Option<u64>,
    pub(super) at_ms: i64,
}

impl StoredEvent {
    /// The event, or [`StoreError::Corrupt`] for an unknown kind.
    pub(super) fn decode(self) -> Result<Event, StoreError> {
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
pub(super) fn message_event(seq: u64, msg: &NewMessage) -> Event {
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
pub(super) fn deletion_event(seq: u64, deletes: u64, at_ms: i64) -> Event {
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
pub(super) enum Target {
    /// A message not deleted yet.
    Live,
    /// A message deleted already: the answer is its deletion event.
    DeletedBefore,
}

/// The target of a deletion from its row (kind code, deleted), if any;
/// [`StoreError::NotFound`] unless it is a message.
pub(super) fn deletion_target(found: Option<(u8, bool)>) -> Result<Target, StoreError> {
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
pub(super) fn deleted_before(
    existing: Option<Event>,
    version: RoomVersion,
) -> Result<Appended, StoreError> {
    let event = existing
        .ok_or_else(|| StoreError::Corrupt("a deleted message has no deletion event".into()))?;
    Ok(Appended::existing(event, version))
}

/// A site as read from its row.
pub(super) fn site_record(
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
/// A user-token key from its columns.
pub(super) fn user_key(kid: String, alg: i64, key: Vec<u8>) -> Result<UserKey, StoreError> {
    let alg = u8::try_from(alg)
        .ok()
        .and_then(KeyAlg::from_code)
        .ok_or_else(|| StoreError::Corrupt(format!("user key {kid} has algorithm {alg}")))?;
    Ok(UserKey { kid, alg, key })
}

pub(super) fn new_epoch() -> u32 {
    loop {
        let e: u32 = rand::random();
        if e != 0 {
            return e;
        }
    }
}

/// A client-supplied seq or cursor as the signed 64-bit integer the
/// databases store; anything beyond `i64::MAX` is past every stored seq.
pub(super) fn seq_to_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// A page size as a SQL `LIMIT`.
pub(super) fn limit_to_i64(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The origins list as stored (a JSON array).
pub(super) fn origins_to_json(origins: &[String]) -> String {
    serde_json::to_string(origins).unwrap_or_else(|_| "[]".to_owned())
}

fn origins_from_json(s: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("bad origins: {e}")))
}

/// A site's rules as both stores keep them: one JSON document.
pub(super) fn rules_to_json(rules: &SiteRules) -> String {
    serde_json::to_string(rules).unwrap_or_else(|_| "{}".to_owned())
}

pub(super) fn rules_from_json(s: &str) -> Result<SiteRules, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("bad site rules: {e}")))
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
        for k in [
            EventKind::Message,
            EventKind::Deletion,
            EventKind::Moderation,
        ] {
            assert_eq!(kind_from_code(kind_code(k)).unwrap(), k);
        }
        assert!(matches!(kind_from_code(7), Err(StoreError::Corrupt(_))));
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
