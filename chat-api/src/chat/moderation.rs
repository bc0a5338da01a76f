//! Moderators in the chat: who may moderate a room (a verified member
//! whose token carries the moderator role for that room, or the site's
//! owner with its secret), the actions (delete a message, time a member
//! out, ban, clear a member's recent messages, the room's slow mode), each
//! appended to the room's log as an event and to the site's audit. A ban
//! or timeout publishes the site's bus word, so that every node forgets
//! its copy of the site's bans and timeouts (`standing.rs`) and enforces
//! an action taken on another at once.

use chatty_shared::parse_decimal;
use chatty_shared::wire::{
    AuditEntry, EventKind, ModerationAction, ModerationRequest, MAX_TIMEOUT_SECS,
};
use chatty_shared::RoomKey;

use super::{Chat, Written};
use crate::error::ApiError;
use crate::metrics::StoreOp;
use crate::rules;
use crate::secrets;
use crate::store::{Moderation, StoreError, MAX_AUDIT_LIMIT};
use crate::token::now_ms;
use crate::validate;

/// How far back `clear` looks: the room's last this many events.
pub(crate) const CLEAR_WINDOW: usize = 100;

/// Who acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Actor {
    /// The site's owner, with the site's secret.
    Owner,
    /// A member whose guest token for this room carries the moderator role.
    Moderator { member_id: String, nick: String },
}

impl Actor {
    fn record(
        &self,
        action: ModerationAction,
        member_id: Option<&str>,
        secs: Option<u32>,
    ) -> Moderation {
        let (moderator_id, moderator_nick) = match self {
            Actor::Owner => (String::new(), String::new()),
            Actor::Moderator { member_id, nick } => (member_id.clone(), nick.clone()),
        };
        Moderation {
            moderator_id,
            moderator_nick,
            action,
            member_id: member_id.map(str::to_owned),
            secs,
            at_ms: now_ms(),
        }
    }
}

fn room_key(site: &str, room: &str) -> Result<RoomKey, ApiError> {
    RoomKey::new(site, room).map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn member(member_id: &str) -> Result<(), ApiError> {
    validate::member_id(member_id).map_err(|m| ApiError::InvalidField(m.into()))
}

impl Chat {
    /// Who presents `bearer` in the room of `key`: the site's owner (its
    /// secret) or a moderator (a guest token of this room with the role,
    /// not banned). 401 without a valid token or secret; 403 `forbidden`
    /// for any other member.
    pub(crate) async fn actor(
        &self,
        key: &RoomKey,
        bearer: Option<&str>,
    ) -> Result<Actor, ApiError> {
        let token = bearer.ok_or_else(|| {
            ApiError::Unauthorized("a moderator's token or the site's secret is required".into())
        })?;
        let site = self.site(key.site()).await?;
        if secrets::matches(token, &site.secret_hash) {
            return Ok(Actor::Owner);
        }
        let claims = self.verify(Some(token), key)?;
        if !claims.moderator {
            return Err(ApiError::Forbidden("moderators only".into()));
        }
        self.check_banned(key.site(), &claims.member_id).await?;
        Ok(Actor::Moderator {
            member_id: claims.member_id,
            nick: claims.nick,
        })
    }

    /// A moderator acts neither on itself nor on another moderator (the
    /// site's owner acts on anyone).
    async fn may_act_on(&self, actor: &Actor, site: &str, member_id: &str) -> Result<(), ApiError> {
        let Actor::Moderator { member_id: me, .. } = actor else {
            return Ok(());
        };
        if me == member_id {
            return Err(ApiError::Forbidden(
                "a moderator cannot act on itself".into(),
            ));
        }
        if self
            .store_call(
                StoreOp::IsModerator,
                self.store.is_moderator(site, member_id),
            )
            .await?
        {
            return Err(ApiError::Forbidden(
                "a moderator cannot act on another moderator".into(),
            ));
        }
        Ok(())
    }

    /// `POST …/moderation`: the action, then its event (and audit line);
    /// the room's new version is published once, after every event of the
    /// action.
    pub(crate) async fn moderate(
        &self,
        site: &str,
        room: &str,
        req: ModerationRequest,
        bearer: Option<&str>,
    ) -> Result<Written, ApiError> {
        let key = room_key(site, room)?;
        let actor = self.actor(&key, bearer).await?;
        let record = match &req {
            ModerationRequest::Timeout { member_id, secs } => {
                member(member_id)?;
                if *secs == 0 || *secs > MAX_TIMEOUT_SECS {
                    return Err(ApiError::InvalidField(format!(
                        "secs must be 1..={MAX_TIMEOUT_SECS} (seven days)"
                    )));
                }
                self.may_act_on(&actor, site, member_id).await?;
                let record = actor.record(ModerationAction::Timeout, Some(member_id), Some(*secs));
                let until = record.at_ms.saturating_add(i64::from(*secs) * 1000);
                self.store_call(
                    StoreOp::SetTimeout,
                    self.store.set_timeout(site, member_id, until),
                )
                .await?;
                self.site_changed(site).await;
                record
            }
            ModerationRequest::Ban { member_id } => {
                member(member_id)?;
                self.may_act_on(&actor, site, member_id).await?;
                self.store_call(StoreOp::Ban, self.store.ban(site, member_id))
                    .await?;
                self.site_changed(site).await;
                actor.record(ModerationAction::Ban, Some(member_id), None)
            }
            ModerationRequest::Clear { member_id } => {
                member(member_id)?;
                self.may_act_on(&actor, site, member_id).await?;
                self.clear(&key, member_id).await?;
                actor.record(ModerationAction::Clear, Some(member_id), None)
            }
            ModerationRequest::SlowMode { secs } => {
                rules::check_slow_mode(*secs).map_err(|e| ApiError::InvalidField(e.to_string()))?;
                self.store_call(
                    StoreOp::SetRoomSlowMode,
                    self.store.set_room_slow_mode(&key, Some(*secs)),
                )
                .await?;
                self.site_changed(site).await;
                actor.record(ModerationAction::SlowMode, None, Some(*secs))
            }
        };
        let appended = self
            .store_call(
                StoreOp::Moderate,
                self.store.append_moderation(&key, &record),
            )
            .await?;
        self.room_moved(&key, appended.version).await;
        tracing::info!(
            site,
            room,
            moderator = %record.moderator_id,
            action = record.action.name(),
            member = record.member_id.as_deref().unwrap_or(""),
            seq = appended.event.seq,
            "moderation"
        );
        Ok(appended.into())
    }

    /// Deletes the member's messages among the room's last
    /// [`CLEAR_WINDOW`] events (those not deleted yet), each by a deletion
    /// event. Not published here: the caller publishes once.
    async fn clear(&self, key: &RoomKey, member_id: &str) -> Result<(), ApiError> {
        let version = self
            .store_call(StoreOp::EventsAfter, self.store.room_version(key))
            .await?;
        let after = version.seq.saturating_sub(CLEAR_WINDOW as u64);
        let (events, _) = self
            .store_call(
                StoreOp::EventsAfter,
                self.store.events_after(key, after, CLEAR_WINDOW),
            )
            .await?;
        let deleted: Vec<u64> = events.iter().filter_map(|e| e.deletes).collect();
        let theirs = events.iter().filter(|e| {
            e.kind == EventKind::Message && e.member_id == member_id && !deleted.contains(&e.seq)
        });
        for e in theirs {
            let at = now_ms();
            match self
                .store_call(StoreOp::Delete, self.store.delete_message(key, e.seq, at))
                .await
            {
                Ok(_) | Err(StoreError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// `DELETE …/messages/{seq}` (a moderator, or the site's secret): the
    /// deletion event; a moderator may not delete another moderator's
    /// message. A new deletion is written to the audit.
    pub(crate) async fn delete(
        &self,
        site: &str,
        room: &str,
        seq: &str,
        bearer: Option<&str>,
    ) -> Result<Written, ApiError> {
        let key = room_key(site, room)?;
        let actor = self.actor(&key, bearer).await?;
        let no_message = || ApiError::NotFound("no such message".into());
        let seq = parse_decimal(seq).ok_or_else(no_message)?;
        let author = self.author(&key, seq).await?;
        if let Some(author) = &author {
            if !matches!(&actor, Actor::Moderator { member_id, .. } if member_id == author) {
                self.may_act_on(&actor, site, author).await?;
            }
        }
        let appended = self
            .store_call(
                StoreOp::Delete,
                self.store.delete_message(&key, seq, now_ms()),
            )
            .await
            .map_err(|e| match e {
                StoreError::NotFound => no_message(),
                e => e.into(),
            })?;
        if appended.created {
            self.room_moved(&key, appended.version).await;
            let record = actor.record(ModerationAction::Delete, author.as_deref(), None);
            let audited = self
                .store_call(
                    StoreOp::AddAudit,
                    self.store.add_audit(&key, &record, appended.event.seq),
                )
                .await;
            if let Err(e) = audited {
                // The deletion stands and every viewer sees it; only its
                // line in the audit is missing.
                tracing::error!(site, room, seq, error = %e, "deletion not written to the audit");
            }
        }
        Ok(appended.into())
    }

    /// The sender of message `seq`, if there is such a message.
    async fn author(&self, key: &RoomKey, seq: u64) -> Result<Option<String>, ApiError> {
        if seq == 0 {
            return Ok(None);
        }
        let (events, _) = self
            .store_call(
                StoreOp::EventsAfter,
                self.store.events_after(key, seq - 1, 1),
            )
            .await?;
        Ok(events
            .into_iter()
            .find(|e| e.seq == seq && e.kind == EventKind::Message)
            .map(|e| e.member_id))
    }

    /// `GET /v1/sites/{site}/audit?limit=` (site secret): newest first.
    pub async fn audit(
        &self,
        site: &str,
        limit: usize,
        secret: Option<&str>,
    ) -> Result<Vec<AuditEntry>, ApiError> {
        self.site_admin(site, secret).await?;
        if limit == 0 || limit > MAX_AUDIT_LIMIT {
            return Err(ApiError::BadRequest(format!(
                "limit must be 1..={MAX_AUDIT_LIMIT}"
            )));
        }
        Ok(self
            .store_call(StoreOp::Audit, self.store.audit(site, limit))
            .await?)
    }

    /// Records whether a verified member is a moderator of the site, as
    /// its user token says at join (so that moderators cannot act on one
    /// another).
    pub(super) async fn note_moderator(
        &self,
        site: &str,
        member_id: &str,
        moderator: bool,
    ) -> Result<(), ApiError> {
        Ok(self
            .store_call(
                StoreOp::SetModerator,
                self.store.set_moderator(site, member_id, moderator),
            )
            .await?)
    }
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000_999), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc(4_102_444_799_000), "2099-12-31 23:59:59 UTC");
    }

    #[test]
    fn the_owner_is_recorded_without_a_name() {
        let r = Actor::Owner.record(ModerationAction::Ban, Some("g1"), None);
        assert_eq!(
            (r.moderator_id.as_str(), r.moderator_nick.as_str()),
            ("", "")
        );
        let m = Actor::Moderator {
            member_id: "u_7".into(),
            nick: "Mo".into(),
        };
        let r = m.record(ModerationAction::SlowMode, None, Some(5));
        assert_eq!((r.moderator_id.as_str(), r.secs), ("u_7", Some(5)));
    }
}
