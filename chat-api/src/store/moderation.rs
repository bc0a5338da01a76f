//! What moderation keeps in the store, beside the event log: moderation
//! events appended with their audit line in one transaction, the audit
//! itself, members' timeouts and the members known as moderators. Both
//! backends implement [`ModerationStore`] in a file of their own
//! (`sqlite/moderation.rs`, `mysql/moderation.rs`) on tables of their own
//! (`audit`, `timeouts`, `moderators`).

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chatty_shared::wire::{AuditEntry, Event, EventKind, ModerationAction};
use chatty_shared::RoomKey;

use super::{Appended, StoreError};

#[cfg(test)]
pub(crate) mod conformance;

/// One moderator's action in a room, as the audit keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moderation {
    /// Empty for the site's owner (its secret).
    pub moderator_id: String,
    /// Empty for the site's owner.
    pub moderator_nick: String,
    pub action: ModerationAction,
    /// The member acted on; `None` for slow mode.
    pub member_id: Option<String>,
    /// The seconds of a timeout or slow mode.
    pub secs: Option<u32>,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
}

impl Moderation {
    /// The moderation event of this action, as event `seq` of its room.
    pub(super) fn event(&self, seq: u64) -> Event {
        Event {
            seq,
            kind: EventKind::Moderation,
            member_id: self.member_id.clone().unwrap_or_default(),
            nick: self.moderator_nick.clone(),
            text: self.action.event_text(self.secs),
            client_id: None,
            deletes: None,
            at_ms: self.at_ms,
        }
    }

    /// Its audit line in room `room`, for the event `seq`.
    #[cfg(test)]
    pub(super) fn audit(&self, room: &str, seq: Option<u64>) -> AuditEntry {
        AuditEntry {
            at_ms: self.at_ms,
            room: room.to_owned(),
            moderator_id: self.moderator_id.clone(),
            moderator_nick: self.moderator_nick.clone(),
            action: self.action,
            member_id: self.member_id.clone(),
            secs: self.secs,
            seq,
        }
    }
}

/// Actions as stored (a small integer column).
pub(super) fn action_code(action: ModerationAction) -> u8 {
    match action {
        ModerationAction::Delete => 0,
        ModerationAction::Timeout => 1,
        ModerationAction::Ban => 2,
        ModerationAction::Clear => 3,
        ModerationAction::SlowMode => 4,
    }
}

pub(super) fn action_from_code(code: i64) -> Result<ModerationAction, StoreError> {
    Ok(match code {
        0 => ModerationAction::Delete,
        1 => ModerationAction::Timeout,
        2 => ModerationAction::Ban,
        3 => ModerationAction::Clear,
        4 => ModerationAction::SlowMode,
        other => {
            return Err(StoreError::Corrupt(format!(
                "unknown moderation action {other}"
            )))
        }
    })
}

/// Who may not write on a site at one moment: its banned members and the
/// members whose timeout had not ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    pub banned: HashSet<String>,
    /// Each timed-out member's end of timeout, in ms since the Unix epoch.
    pub timed_out: HashMap<String, i64>,
}

impl Standing {
    /// Builds it from the rows read, or `None` when either list holds more
    /// than `max` (the reader asked for one more to tell).
    pub(super) fn bounded(
        banned: Vec<String>,
        timed_out: Vec<(String, i64)>,
        max: usize,
    ) -> Option<Standing> {
        (banned.len() <= max && timed_out.len() <= max).then(|| Standing {
            banned: banned.into_iter().collect(),
            timed_out: timed_out.into_iter().collect(),
        })
    }
}

/// Most audit lines one read answers.
pub const MAX_AUDIT_LIMIT: usize = 1000;

/// Moderation's part of the store.
#[async_trait]
pub trait ModerationStore: Send + Sync + 'static {
    /// Appends the moderation event of `m` to the room's log (creating the
    /// room) and its audit line, in one transaction.
    async fn append_moderation(
        &self,
        key: &RoomKey,
        m: &Moderation,
    ) -> Result<Appended, StoreError>;
    /// Adds an audit line for an action whose event is already in the log
    /// (a deletion: `seq` is its seq).
    async fn add_audit(&self, key: &RoomKey, m: &Moderation, seq: u64) -> Result<(), StoreError>;
    /// The site's last `limit` (at most [`MAX_AUDIT_LIMIT`]) audit lines,
    /// newest first.
    async fn audit(&self, site: &str, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;
    /// Times a member of a site out until `until_ms`, replacing an earlier
    /// timeout.
    async fn set_timeout(
        &self,
        site: &str,
        member_id: &str,
        until_ms: i64,
    ) -> Result<(), StoreError>;
    /// When the member's timeout ends (it may be over already); `None`
    /// when never timed out.
    async fn timeout_until(&self, site: &str, member_id: &str) -> Result<Option<i64>, StoreError>;
    /// The site's banned members and the timeouts not ended at `now_ms`;
    /// `None` when the site has more than `max` of either (the caller then
    /// asks per member).
    async fn standing(
        &self,
        site: &str,
        now_ms: i64,
        max: usize,
    ) -> Result<Option<Standing>, StoreError>;
    /// Records whether a verified member of a site is a moderator (as its
    /// last user token said).
    async fn set_moderator(
        &self,
        site: &str,
        member_id: &str,
        moderator: bool,
    ) -> Result<(), StoreError>;
    async fn is_moderator(&self, site: &str, member_id: &str) -> Result<bool, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip() {
        for a in [
            ModerationAction::Delete,
            ModerationAction::Timeout,
            ModerationAction::Ban,
            ModerationAction::Clear,
            ModerationAction::SlowMode,
        ] {
            assert_eq!(action_from_code(i64::from(action_code(a))).unwrap(), a);
        }
        assert!(matches!(action_from_code(9), Err(StoreError::Corrupt(_))));
    }
}
