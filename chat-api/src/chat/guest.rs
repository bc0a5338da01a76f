//! What a guest does in a room: join, send, poll the messages, list the
//! members, stay present (heartbeat) and leave.

use std::future::Future;
use std::time::Duration;

use chatty_shared::wire::{
    Event, EventKind, JoinRequest, JoinResponse, Member, MembersList, MessagesPage,
    MAX_LISTED_MEMBERS,
};
use chatty_shared::Rate;
use chatty_shared::RoomKey;
use chatty_shared::Version;
use chatty_shared::{if_none_match, members_etag, EtagBuf, RoomVersion};

use super::{presence_down, Chat, Guard, Poll, Polled, Written, JOIN_MESSAGES, PAGE_SIZE};
use crate::cache::VersionCache;
use crate::error::ApiError;
use crate::host_token;
use crate::limits::Check;
use crate::metrics::StoreOp;
use crate::rules::Sender;
use crate::secrets;
use crate::store::{NewMessage, SiteRecord};
use crate::token::{now_ms, now_secs, Claims, TokenError, TOKEN_TTL};
use crate::validate;

/// A conditional GET of a room resource (its messages or its members):
/// `NotModified` from the version cache when an `If-None-Match` value names
/// the cached version; else `read` (what to answer and its version), the
/// version cached, and `NotModified` again when the read one matches.
async fn unless_current<T, V, Fut>(
    cache: &VersionCache<RoomKey, V>,
    key: &RoomKey,
    if_none_match_values: &[&[u8]],
    etag: fn(V) -> EtagBuf,
    read: impl FnOnce() -> Fut,
) -> Result<Polled<T, V>, ApiError>
where
    V: Version,
    Fut: Future<Output = Result<(T, V), ApiError>>,
{
    let conditional = !if_none_match_values.is_empty();
    let matches = |v: V| {
        conditional && if_none_match(if_none_match_values.iter().copied(), etag(v).as_bytes())
    };
    let not_modified = |version| Polled {
        poll: Poll::NotModified,
        version,
    };
    if conditional {
        if let Some(v) = cache.get(key) {
            if matches(v) {
                return Ok(not_modified(v));
            }
        }
    }
    let ticket = cache.ticket();
    let (fresh, version) = read().await?;
    cache.fill(key.clone(), version, ticket);
    if matches(version) {
        return Ok(not_modified(version));
    }
    Ok(Polled {
        poll: Poll::Fresh(fresh),
        version,
    })
}

impl Chat {
    /// `POST …/join`: a member, a token and the initial sync.
    pub(crate) async fn join(
        &self,
        site: &str,
        room: &str,
        req: &JoinRequest,
        token: Option<&str>,
        ip: &str,
    ) -> Result<JoinResponse, ApiError> {
        let (key, _site) = self.room(site, room).await?;
        let (member_id, nick, moderator) = match &req.user_token {
            Some(user_token) => {
                let user = self.verified_user(key.site(), user_token).await?;
                self.note_moderator(key.site(), &user.member_id, user.moderator)
                    .await?;
                (Some(user.member_id), user.name, user.moderator)
            }
            None => match self.returning_member(&key, token)? {
                // A verified user's token keeps its name and role: only the
                // host site names its users.
                Some(c) if host_token::is_verified(&c.member_id) => {
                    (Some(c.member_id), c.nick, c.moderator)
                }
                returning => {
                    let nick =
                        validate::nick(&req.nick).map_err(|m| ApiError::InvalidField(m.into()))?;
                    (returning.map(|c| c.member_id), nick, false)
                }
            },
        };
        if let Some(id) = &member_id {
            self.check_banned(key.site(), id).await?;
            self.check_timed_out(key.site(), id).await?;
        }
        self.pass(self.ip_limit(ip).into_iter().collect()).await?;
        let verified = member_id.as_deref().is_some_and(host_token::is_verified);
        if !verified {
            self.guests_may_join(key.site()).await?;
            self.guest_name_free(&key, &nick).await?;
        }
        let member = Member {
            id: member_id.unwrap_or_else(|| secrets::random_id(16)),
            nick,
        };
        self.enter(&key, &member).await;
        let (messages, version) = self.recent_messages(&key).await?;
        let (members, members_version) = self.present(&key, &member).await;
        let claims = Claims {
            site: key.site().to_owned(),
            room: key.room().to_owned(),
            member_id: member.id.clone(),
            nick: member.nick.clone(),
            exp: now_secs() + TOKEN_TTL.as_secs(),
            moderator,
        };
        Ok(JoinResponse {
            token: self.keys.sign(&claims),
            member,
            messages,
            members: members.members,
            members_count: members.count,
            moderator,
            seq: version.seq,
            etag: version.etag().as_str().to_owned(),
            members_etag: members_etag(members_version).as_str().to_owned(),
            token_ttl_secs: TOKEN_TTL.as_secs(),
        })
    }

    /// The member a join keeps: a token of this room keeps the guest's
    /// identity; an expired one is simply replaced, a forged one or one of
    /// another room refused.
    fn returning_member(
        &self,
        key: &RoomKey,
        token: Option<&str>,
    ) -> Result<Option<Claims>, ApiError> {
        let Some(token) = token else { return Ok(None) };
        match self.keys.verify(token, key, now_secs()) {
            Ok(claims) => Ok(Some(claims)),
            Err(TokenError::Expired) => Ok(None),
            Err(_) => Err(ApiError::unauthorized()),
        }
    }

    /// Adds a joining member to the room's presence; without presence the
    /// join goes on.
    async fn enter(&self, key: &RoomKey, member: &Member) {
        match self
            .presence
            .join(key, member, self.settings.presence_ttl)
            .await
        {
            Ok(v) => {
                self.members_moved(key, "join", v).await;
            }
            Err(e) => tracing::warn!(error = %e, "presence join failed; joining without presence"),
        }
    }

    /// A join's messages: the most recent ones (deletions left out) and the
    /// room's version.
    async fn recent_messages(&self, key: &RoomKey) -> Result<(Vec<Event>, RoomVersion), ApiError> {
        let ticket = self.caches.messages.ticket();
        let (events, version) = self
            .store_call(
                StoreOp::Recent,
                self.store.recent_messages(key, JOIN_MESSAGES),
            )
            .await?;
        self.caches.messages.fill(key.clone(), version, ticket);
        let messages = events
            .into_iter()
            .filter(|e| e.kind == EventKind::Message)
            .collect();
        Ok((messages, version))
    }

    /// A join's members list and its version; only the joining member, at
    /// version 0, when presence does not answer.
    async fn present(&self, key: &RoomKey, member: &Member) -> (MembersList, u64) {
        let ticket = self.caches.members.ticket();
        match self.presence.list(key, MAX_LISTED_MEMBERS).await {
            Ok((members, version)) => {
                self.caches.members.fill(key.clone(), version, ticket);
                (members, version)
            }
            Err(e) => {
                tracing::warn!(error = %e, "presence list failed");
                (MembersList::capped(vec![member.clone()]), 0)
            }
        }
    }

    /// `POST …/messages`: stores a message (or finds the original of a
    /// retry). In order: the token, the text's length, a ban or timeout,
    /// guests that only read, the rate limits and slow mode (asked
    /// together), the site's rules on the text (masked or refused), the
    /// store.
    pub(crate) async fn send(
        &self,
        site: &str,
        room: &str,
        token: Option<&str>,
        text: String,
        client_id: String,
        ip: &str,
    ) -> Result<Written, ApiError> {
        let (key, site) = self.room(site, room).await?;
        let claims = self.verify(token, &key)?;
        let max = self.settings.max_text_bytes.min(site.limits.max_text_bytes) as usize;
        validate::text(&text, max).map_err(|m| {
            if text.len() > max {
                ApiError::TooLarge(m)
            } else {
                ApiError::InvalidField(m)
            }
        })?;
        validate::client_id(&client_id).map_err(|m| ApiError::InvalidField(m.into()))?;
        self.check_banned(key.site(), &claims.member_id).await?;
        self.check_timed_out(key.site(), &claims.member_id).await?;
        // Told apart by the signed token only: a verified user of the host
        // site may send links, a moderator is not slowed.
        let sender = Sender {
            verified: host_token::is_verified(&claims.member_id),
            moderator: claims.moderator,
        };
        let rules = self.rules_for(key.site(), sender).await?;
        let mut limits = self.send_limits(&key, &site, &claims.member_id, ip);
        limits.extend(
            self.slow_mode_limit(&key, &rules, &claims.member_id, sender)
                .await?,
        );
        self.pass(limits).await?;
        let text = self.apply_rules(&rules, sender, text)?;
        let msg = NewMessage {
            member_id: claims.member_id,
            nick: claims.nick,
            text,
            client_id,
            at_ms: now_ms(),
        };
        let appended = self.writer.append(key, msg).await?;
        Ok(appended.into())
    }

    /// The address's rate limit, if one is set.
    fn ip_limit(&self, ip: &str) -> Option<(Guard, Check)> {
        let rate = self.settings.ip_rate?;
        let key = format!("ip:{ip}");
        Some((Guard::Rate("ip"), Check::Hit { key, rate }))
    }

    /// The rate limits of a send: the address's, the guest's, and the
    /// site's own per-guest limit when it sets one.
    fn send_limits(
        &self,
        key: &RoomKey,
        site: &SiteRecord,
        member_id: &str,
        ip: &str,
    ) -> Vec<(Guard, Check)> {
        let mut limits: Vec<(Guard, Check)> = self.ip_limit(ip).into_iter().collect();
        if let Some(rate) = self.settings.guest_rate {
            let key = format!("g:{}:{}", key.site(), member_id);
            limits.push((Guard::Rate("guest"), Check::Hit { key, rate }));
        }
        let own = site.limits;
        if own.guest_messages > 0 && own.guest_window_secs > 0 {
            let rate = Rate {
                count: own.guest_messages,
                per: Duration::from_secs(u64::from(own.guest_window_secs)),
            };
            let key = format!("gs:{}:{}", key.site(), member_id);
            limits.push((Guard::Rate("guest"), Check::Hit { key, rate }));
        }
        limits
    }

    /// `GET …/messages?after=`: `NotModified` when `if_none_match` names the
    /// current version, else a page of events and the current version.
    pub(crate) async fn poll(
        &self,
        site: &str,
        room: &str,
        after: u64,
        if_none_match_values: &[&[u8]],
    ) -> Result<Polled<MessagesPage, RoomVersion>, ApiError> {
        let (key, _site) = self.room(site, room).await?;
        let read = || async {
            let (events, version) = self
                .store_call(
                    StoreOp::EventsAfter,
                    self.store.events_after(&key, after, PAGE_SIZE),
                )
                .await?;
            let seq = events.last().map_or(after, |e| e.seq);
            // Events and version come from one snapshot, so a page short of
            // the version can only be a full one; `more` whenever it falls
            // short.
            let more = seq < version.seq;
            Ok((MessagesPage { events, seq, more }, version))
        };
        let etag = |v: RoomVersion| v.etag();
        unless_current(
            &self.caches.messages,
            &key,
            if_none_match_values,
            etag,
            read,
        )
        .await
    }

    /// `GET …/members`: like [`poll`](Self::poll), for the members list.
    pub(crate) async fn members(
        &self,
        site: &str,
        room: &str,
        if_none_match_values: &[&[u8]],
    ) -> Result<Polled<MembersList, u64>, ApiError> {
        let (key, _site) = self.room(site, room).await?;
        let read = || async {
            self.presence
                .list(&key, MAX_LISTED_MEMBERS)
                .await
                .map_err(presence_down)
        };
        unless_current(
            &self.caches.members,
            &key,
            if_none_match_values,
            members_etag,
            read,
        )
        .await
    }

    /// `POST …/heartbeat`.
    pub(crate) async fn heartbeat(
        &self,
        site: &str,
        room: &str,
        token: Option<&str>,
    ) -> Result<(), ApiError> {
        let (key, _site) = self.room(site, room).await?;
        let claims = self.verify(token, &key)?;
        self.check_banned(key.site(), &claims.member_id).await?;
        let member = Member {
            id: claims.member_id,
            nick: claims.nick,
        };
        let changed = self
            .presence
            .heartbeat(&key, &member, self.settings.presence_ttl)
            .await
            .map_err(presence_down)?;
        if let Some(v) = changed {
            self.members_moved(&key, "join", v).await;
        }
        Ok(())
    }

    /// `POST …/leave`.
    pub(crate) async fn leave(
        &self,
        site: &str,
        room: &str,
        token: Option<&str>,
    ) -> Result<(), ApiError> {
        let (key, _site) = self.room(site, room).await?;
        let claims = self.verify(token, &key)?;
        let changed = self
            .presence
            .leave(&key, &claims.member_id)
            .await
            .map_err(presence_down)?;
        if let Some(v) = changed {
            self.members_moved(&key, "leave", v).await;
        }
        Ok(())
    }
}
