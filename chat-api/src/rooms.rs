//! The use cases — join, send, poll, members, heartbeat, leave, moderation
//! and site administration — putting the store, the bus, presence, rate
//! limits and the version caches together. Handlers in `routes/` only
//! translate HTTP to and from these calls.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatty_shared::bus::{Bus, BusEvent, BusMessage};
use chatty_shared::config::Rate;
use chatty_shared::decimal::parse_decimal;
use chatty_shared::etag::{if_none_match, members_etag, RoomVersion};
use chatty_shared::room::{is_valid_site, RoomKey};
use chatty_shared::wire::{
    CreateSiteRequest, CreatedSite, Event, EventKind, JoinResponse, Member, MessagesPage, SiteInfo,
    SiteLimits,
};

use crate::cache::{RoomCaches, SiteCache, SITE_MAX_AGE};
use crate::error::ApiError;
use crate::limits::{Decision, Limiter};
use crate::metrics::{StoreOp, METRICS};
use crate::presence::Presence;
use crate::secrets;
use crate::store::{NewMessage, NewSite, SiteRecord, Store, StoreError};
use crate::token::{now_ms, now_secs, Claims, TokenError, TokenKeys, TOKEN_TTL};
use crate::validate;

/// Events per page of `GET …/messages`.
pub const PAGE_SIZE: usize = 100;
/// Messages in a join's initial sync.
pub const JOIN_MESSAGES: usize = 50;
/// The demo site's id.
pub const DEMO_SITE: &str = "demo";
/// The demo site's origins: localhost and 127.0.0.1 on any port.
pub const DEMO_ORIGINS: &[&str] = &["http://localhost:*", "http://127.0.0.1:*"];

/// The settings the use cases need, taken from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub store_timeout: Duration,
    pub presence_ttl: Duration,
    pub max_text_bytes: u32,
    pub guest_rate: Option<Rate>,
    pub ip_rate: Option<Rate>,
    /// SHA-256 of the operator token; admin is off without one.
    pub admin_token_hash: Option<[u8; 32]>,
    pub demo_site: bool,
    pub node: String,
}

/// What a poll of a room resource answers.
#[derive(Debug)]
pub enum Poll<T> {
    /// The client's ETag is current.
    NotModified,
    Fresh(T),
}

/// One node's chat service.
pub struct Chat {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub presence: Arc<dyn Presence>,
    pub limiter: Arc<dyn Limiter>,
    pub keys: TokenKeys,
    pub settings: Settings,
    pub caches: RoomCaches,
    sites: SiteCache,
    bus_up: AtomicBool,
    draining: AtomicBool,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            // No 500 in the contract: corrupt data answers 503 like an
            // outage, but is logged as what it is (see `store_call`).
            StoreError::Connection(_)
            | StoreError::Timeout(_)
            | StoreError::Server(_)
            | StoreError::Corrupt(_) => ApiError::Unavailable,
            StoreError::NotFound => ApiError::not_found(),
            StoreError::Conflict => ApiError::Conflict("already exists".into()),
        }
    }
}

fn presence_down(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "presence unavailable");
    ApiError::Unavailable
}

impl Chat {
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        presence: Arc<dyn Presence>,
        limiter: Arc<dyn Limiter>,
        keys: TokenKeys,
        settings: Settings,
    ) -> Self {
        Self {
            store,
            bus,
            presence,
            limiter,
            keys,
            settings,
            caches: RoomCaches::default(),
            sites: SiteCache::new(SITE_MAX_AGE),
            bus_up: AtomicBool::new(true),
            draining: AtomicBool::new(false),
        }
    }

    /// Runs a store call with the store timeout, timing it; a timeout is
    /// [`StoreError::Timeout`].
    pub async fn store_call<T>(
        &self,
        op: StoreOp,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let start = Instant::now();
        let res = match tokio::time::timeout(self.settings.store_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(self.settings.store_timeout)),
        };
        METRICS
            .store_duration
            .with_label_values(&[op.label()])
            .observe(start.elapsed().as_secs_f64());
        match &res {
            Err(e) if e.is_outage() => {
                METRICS.store_errors.inc();
                tracing::warn!(op = op.label(), error = %e, "store call failed");
            }
            Err(e @ StoreError::Corrupt(_)) => {
                METRICS.store_errors.inc();
                tracing::error!(op = op.label(), error = %e, "store holds data it cannot read");
            }
            _ => {}
        }
        res
    }

    /// Publishes a bus message; a failure is counted and logged, never
    /// returned (Redis is an accelerator).
    pub async fn publish(&self, msg: BusMessage) {
        match self.bus.publish(&msg).await {
            Ok(()) => {
                if !self.bus_up.swap(true, Ordering::Relaxed) {
                    tracing::info!("bus publish works again");
                }
            }
            Err(e) => {
                METRICS.publish_failures.inc();
                if self.bus_up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "bus publish failed");
                }
            }
        }
    }

    async fn room_moved(&self, key: &RoomKey, version: RoomVersion) {
        self.caches.messages.update(key.clone(), version);
        self.publish(BusMessage::Room {
            key: key.clone(),
            version,
        })
        .await;
    }

    async fn members_moved(&self, key: &RoomKey, version: u64) {
        self.caches.members.update(key.clone(), version);
        self.publish(BusMessage::Members {
            key: key.clone(),
            version,
        })
        .await;
    }

    /// The site record, from the cache or the store; 404 when unknown.
    pub async fn site(&self, id: &str) -> Result<Arc<SiteRecord>, ApiError> {
        if !is_valid_site(id.as_bytes()) {
            return Err(ApiError::NotFound("no such site".into()));
        }
        let rec = match self.sites.get(id) {
            Some(rec) => rec,
            None => {
                let rec = self
                    .store_call(StoreOp::Site, self.store.site(id))
                    .await?
                    .map(Arc::new);
                self.sites.put(id, rec.clone());
                rec
            }
        };
        rec.ok_or_else(|| ApiError::NotFound("no such site".into()))
    }

    /// Validates the path parts and looks up the site.
    pub async fn room(
        &self,
        site: &str,
        room: &str,
    ) -> Result<(RoomKey, Arc<SiteRecord>), ApiError> {
        let rec = self.site(site).await?;
        let key = RoomKey::new(site, room).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        Ok((key, rec))
    }

    async fn limit(
        &self,
        scope: &'static str,
        key: String,
        rate: Option<Rate>,
    ) -> Result<(), ApiError> {
        let Some(rate) = rate else { return Ok(()) };
        match self.limiter.hit(&key, rate).await {
            Decision::Allowed => Ok(()),
            Decision::Limited { retry_after } => {
                METRICS.rate_limited.with_label_values(&[scope]).inc();
                Err(ApiError::RateLimited { retry_after })
            }
        }
    }

    async fn check_banned(&self, site: &str, member_id: &str) -> Result<(), ApiError> {
        if self
            .store_call(StoreOp::IsBanned, self.store.is_banned(site, member_id))
            .await?
        {
            return Err(ApiError::Banned);
        }
        Ok(())
    }

    /// Verifies a guest token for this room.
    pub fn verify(&self, token: Option<&str>, key: &RoomKey) -> Result<Claims, ApiError> {
        let token = token.ok_or_else(ApiError::unauthorized)?;
        self.keys.verify(token, key, now_secs()).map_err(|e| {
            ApiError::Unauthorized(
                match e {
                    TokenError::Expired => "token expired, join again",
                    TokenError::WrongRoom => "token is for another room",
                    _ => "invalid token",
                }
                .into(),
            )
        })
    }

    /// `POST …/join`: a member, a token and the initial sync.
    pub async fn join(
        &self,
        site: &str,
        room: &str,
        nick: &str,
        token: Option<&str>,
        ip: &str,
    ) -> Result<JoinResponse, ApiError> {
        let (key, _site) = self.room(site, room).await?;
        let nick = validate::nick(nick).map_err(|m| ApiError::InvalidField(m.into()))?;
        // A token of this room keeps the guest's identity; an expired one is
        // simply replaced, a forged one or one of another room refused.
        let member_id = match token {
            None => None,
            Some(t) => match self.keys.verify(t, &key, now_secs()) {
                Ok(claims) => Some(claims.member_id),
                Err(TokenError::Expired) => None,
                Err(_) => return Err(ApiError::unauthorized()),
            },
        };
        if let Some(id) = &member_id {
            self.check_banned(key.site(), id).await?;
        }
        self.limit("ip", format!("ip:{ip}"), self.settings.ip_rate)
            .await?;
        let member = Member {
            id: member_id.unwrap_or_else(|| secrets::random_id(16)),
            nick,
        };
        match self
            .presence
            .join(&key, &member, self.settings.presence_ttl)
            .await
        {
            Ok(v) => {
                METRICS.presence_changes.with_label_values(&["join"]).inc();
                self.members_moved(&key, v).await;
            }
            Err(e) => tracing::warn!(error = %e, "presence join failed; joining without presence"),
        }
        let messages_ticket = self.caches.messages.ticket();
        let (events, version) = self
            .store_call(
                StoreOp::Recent,
                self.store.recent_messages(&key, JOIN_MESSAGES),
            )
            .await?;
        self.caches
            .messages
            .fill(key.clone(), version, messages_ticket);
        let messages: Vec<Event> = events
            .into_iter()
            .filter(|e| e.kind == EventKind::Message)
            .collect();
        let members_ticket = self.caches.members.ticket();
        let (members, members_version) = match self.presence.list(&key).await {
            Ok((m, v)) => {
                self.caches.members.fill(key.clone(), v, members_ticket);
                (m, v)
            }
            Err(e) => {
                tracing::warn!(error = %e, "presence list failed");
                (vec![member.clone()], 0)
            }
        };
        let claims = Claims {
            site: key.site().to_owned(),
            room: key.room().to_owned(),
            member_id: member.id.clone(),
            nick: member.nick.clone(),
            exp: now_secs() + TOKEN_TTL.as_secs(),
        };
        Ok(JoinResponse {
            token: self.keys.sign(&claims),
            member,
            messages,
            members,
            seq: version.seq,
            etag: version.etag().as_str().to_owned(),
            members_etag: members_etag(members_version).as_str().to_owned(),
            token_ttl_secs: TOKEN_TTL.as_secs(),
        })
    }

    /// `POST …/messages`: stores a message (or finds the original of a
    /// retry). Returns the event, the room's version and whether it is new.
    pub async fn send(
        &self,
        site: &str,
        room: &str,
        token: Option<&str>,
        text: String,
        client_id: String,
        ip: &str,
    ) -> Result<(Event, RoomVersion, bool), ApiError> {
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
        self.limit("ip", format!("ip:{ip}"), self.settings.ip_rate)
            .await?;
        self.limit(
            "guest",
            format!("g:{}:{}", key.site(), claims.member_id),
            self.settings.guest_rate,
        )
        .await?;
        let limits = site.limits;
        if limits.guest_messages > 0 && limits.guest_window_secs > 0 {
            let rate = Rate {
                count: limits.guest_messages,
                per: Duration::from_secs(u64::from(limits.guest_window_secs)),
            };
            self.limit(
                "guest",
                format!("gs:{}:{}", key.site(), claims.member_id),
                Some(rate),
            )
            .await?;
        }
        let msg = NewMessage {
            member_id: claims.member_id,
            nick: claims.nick,
            text,
            client_id,
            at_ms: now_ms(),
        };
        let appended = self
            .store_call(StoreOp::Append, self.store.append_message(&key, msg))
            .await?;
        if appended.created {
            METRICS.messages_stored.inc();
            self.room_moved(&key, appended.version).await;
        }
        Ok((appended.event, appended.version, appended.created))
    }

    /// `GET …/messages?after=`: `NotModified` when `if_none_match` names the
    /// current version, else a page of events and the current version.
    pub async fn poll(
        &self,
        site: &str,
        room: &str,
        after: u64,
        if_none_match_values: &[&[u8]],
    ) -> Result<(Poll<MessagesPage>, RoomVersion), ApiError> {
        let (key, _site) = self.room(site, room).await?;
        let conditional = !if_none_match_values.is_empty();
        if conditional {
            if let Some(v) = self.caches.messages.get(&key) {
                if if_none_match(if_none_match_values.iter().copied(), v.etag().as_bytes()) {
                    return Ok((Poll::NotModified, v));
                }
            }
        }
        let ticket = self.caches.messages.ticket();
        let (events, version) = self
            .store_call(
                StoreOp::EventsAfter,
                self.store.events_after(&key, after, PAGE_SIZE),
            )
            .await?;
        self.caches.messages.fill(key, version, ticket);
        if conditional
            && if_none_match(
                if_none_match_values.iter().copied(),
                version.etag().as_bytes(),
            )
        {
            return Ok((Poll::NotModified, version));
        }
        let seq = events.last().map_or(after, |e| e.seq);
        // Events and version come from one snapshot, so a page short of the
        // version can only be a full one; `more` whenever it falls short.
        let more = seq < version.seq;
        Ok((Poll::Fresh(MessagesPage { events, seq, more }), version))
    }

    /// `GET …/members`.
    pub async fn members(
        &self,
        site: &str,
        room: &str,
        if_none_match_values: &[&[u8]],
    ) -> Result<(Poll<Vec<Member>>, u64), ApiError> {
        let (key, _site) = self.room(site, room).await?;
        let conditional = !if_none_match_values.is_empty();
        if conditional {
            if let Some(v) = self.caches.members.get(&key) {
                if if_none_match(
                    if_none_match_values.iter().copied(),
                    members_etag(v).as_bytes(),
                ) {
                    return Ok((Poll::NotModified, v));
                }
            }
        }
        let ticket = self.caches.members.ticket();
        let (members, version) = self.presence.list(&key).await.map_err(presence_down)?;
        self.caches.members.fill(key, version, ticket);
        if conditional
            && if_none_match(
                if_none_match_values.iter().copied(),
                members_etag(version).as_bytes(),
            )
        {
            return Ok((Poll::NotModified, version));
        }
        Ok((Poll::Fresh(members), version))
    }

    /// `POST …/heartbeat`.
    pub async fn heartbeat(
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
            METRICS.presence_changes.with_label_values(&["join"]).inc();
            self.members_moved(&key, v).await;
        }
        Ok(())
    }

    /// `POST …/leave`.
    pub async fn leave(&self, site: &str, room: &str, token: Option<&str>) -> Result<(), ApiError> {
        let (key, _site) = self.room(site, room).await?;
        let claims = self.verify(token, &key)?;
        let changed = self
            .presence
            .leave(&key, &claims.member_id)
            .await
            .map_err(presence_down)?;
        if let Some(v) = changed {
            METRICS.presence_changes.with_label_values(&["leave"]).inc();
            self.members_moved(&key, v).await;
        }
        Ok(())
    }

    /// Checks a site owner's secret; 401 otherwise.
    pub async fn site_admin(
        &self,
        site: &str,
        secret: Option<&str>,
    ) -> Result<Arc<SiteRecord>, ApiError> {
        let secret = secret.ok_or_else(|| ApiError::Unauthorized("site secret required".into()))?;
        let rec = self.site(site).await?;
        if !secrets::matches(secret, &rec.secret_hash) {
            return Err(ApiError::Unauthorized("wrong site secret".into()));
        }
        Ok(rec)
    }

    /// `DELETE …/messages/{seq}` (site secret).
    pub async fn delete(
        &self,
        site: &str,
        room: &str,
        seq: &str,
        secret: Option<&str>,
    ) -> Result<(Event, RoomVersion), ApiError> {
        self.site_admin(site, secret).await?;
        let key = RoomKey::new(site, room).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let seq = parse_decimal(seq).ok_or_else(|| ApiError::NotFound("no such message".into()))?;
        let appended = self
            .store_call(
                StoreOp::Delete,
                self.store.delete_message(&key, seq, now_ms()),
            )
            .await
            .map_err(|e| match e {
                StoreError::NotFound => ApiError::NotFound("no such message".into()),
                e => e.into(),
            })?;
        if appended.created {
            self.room_moved(&key, appended.version).await;
        }
        Ok((appended.event, appended.version))
    }

    /// `POST /v1/sites/{site}/bans` (site secret).
    pub async fn ban(
        &self,
        site: &str,
        member_id: &str,
        secret: Option<&str>,
    ) -> Result<(), ApiError> {
        self.site_admin(site, secret).await?;
        validate::member_id(member_id).map_err(|m| ApiError::InvalidField(m.into()))?;
        self.store_call(StoreOp::Ban, self.store.ban(site, member_id))
            .await?;
        Ok(())
    }

    /// `PUT /v1/sites/{site}/limits` (site secret).
    pub async fn set_limits(
        &self,
        site: &str,
        limits: SiteLimits,
        secret: Option<&str>,
    ) -> Result<SiteLimits, ApiError> {
        self.site_admin(site, secret).await?;
        let max = crate::config::MAX_TEXT_BYTES_LIMIT;
        if limits.max_text_bytes == 0 || limits.max_text_bytes > max {
            return Err(ApiError::InvalidField(format!(
                "max_text_bytes must be 1..={max}"
            )));
        }
        if (limits.guest_messages == 0) != (limits.guest_window_secs == 0) {
            return Err(ApiError::InvalidField(
                "guest_messages and guest_window_secs must both be 0 (no limit) or both positive"
                    .into(),
            ));
        }
        if limits.guest_window_secs > 86_400 {
            return Err(ApiError::InvalidField(
                "guest_window_secs must be at most 86400".into(),
            ));
        }
        self.store_call(StoreOp::SetLimits, self.store.set_limits(site, limits))
            .await?;
        self.sites.forget(site);
        Ok(limits)
    }

    /// Checks the operator token; 401 otherwise (always, when admin is off).
    pub fn operator(&self, token: Option<&str>) -> Result<(), ApiError> {
        match (&self.settings.admin_token_hash, token) {
            (Some(h), Some(t)) if secrets::matches(t, h) => Ok(()),
            _ => Err(ApiError::Unauthorized("operator token required".into())),
        }
    }

    /// The limits a new site starts with.
    pub fn default_limits(&self) -> SiteLimits {
        SiteLimits {
            max_text_bytes: self.settings.max_text_bytes,
            guest_messages: 0,
            guest_window_secs: 0,
        }
    }

    /// `POST /v1/admin/sites` (operator token).
    pub async fn create_site(
        &self,
        req: CreateSiteRequest,
        token: Option<&str>,
    ) -> Result<CreatedSite, ApiError> {
        self.operator(token)?;
        let id = match req.id {
            Some(id) if is_valid_site(id.as_bytes()) => id,
            Some(_) => {
                return Err(ApiError::InvalidField(
                    "id must be 1-32 characters of a-z, 0-9 and '-'".into(),
                ))
            }
            None => format!("s{}", secrets::random_id(11)),
        };
        let origins = validate::origin_patterns(&req.origins).map_err(ApiError::InvalidField)?;
        let (secret, secret_hash) = secrets::new_secret();
        let site = NewSite {
            id: id.clone(),
            origins: origins.clone(),
            secret_hash,
            limits: self.default_limits(),
        };
        self.store_call(StoreOp::CreateSite, self.store.create_site(&site))
            .await
            .map_err(|e| match e {
                StoreError::Conflict => ApiError::Conflict(format!("site {id:?} already exists")),
                e => e.into(),
            })?;
        self.sites.forget(&id);
        Ok(CreatedSite {
            site: SiteInfo {
                id,
                origins,
                limits: site.limits,
            },
            secret,
        })
    }

    /// `GET /v1/admin/sites` (operator token).
    pub async fn list_sites(&self, token: Option<&str>) -> Result<Vec<SiteInfo>, ApiError> {
        self.operator(token)?;
        let sites = self
            .store_call(StoreOp::Sites, self.store.list_sites())
            .await?;
        Ok(sites
            .into_iter()
            .map(|s| SiteInfo {
                id: s.id,
                origins: s.origins,
                limits: s.limits,
            })
            .collect())
    }

    /// Creates the demo site unless it exists; returns its secret when it
    /// was created now.
    pub async fn ensure_demo_site(&self) -> Result<Option<String>, StoreError> {
        if self
            .store_call(StoreOp::Site, self.store.site(DEMO_SITE))
            .await?
            .is_some()
        {
            return Ok(None);
        }
        let (secret, secret_hash) = secrets::new_secret();
        let site = NewSite {
            id: DEMO_SITE.into(),
            origins: DEMO_ORIGINS.iter().map(|s| (*s).to_owned()).collect(),
            secret_hash,
            limits: self.default_limits(),
        };
        match self
            .store_call(StoreOp::CreateSite, self.store.create_site(&site))
            .await
        {
            Ok(()) => Ok(Some(secret)),
            Err(StoreError::Conflict) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The node is stopping: /readyz answers 503 from now on and every
    /// answer closes its connection, while requests are still served.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Readiness: the store answers (the bus is reported, never required).
    pub async fn ready(&self) -> (bool, bool) {
        let store_ok = self
            .store_call(StoreOp::Ping, self.store.ping())
            .await
            .is_ok();
        let bus_ok = tokio::time::timeout(self.settings.store_timeout, self.bus.ping())
            .await
            .is_ok_and(|r| r.is_ok());
        METRICS
            .backend_up
            .with_label_values(&["store"])
            .set(i64::from(store_ok));
        METRICS
            .backend_up
            .with_label_values(&["bus"])
            .set(i64::from(bus_ok));
        (store_ok, bus_ok)
    }

    /// Publishes this node's heartbeat.
    pub async fn publish_heartbeat(&self) -> bool {
        let ok = self
            .bus
            .publish(&BusMessage::Heartbeat {
                node: self.settings.node.clone(),
            })
            .await
            .is_ok();
        METRICS
            .backend_up
            .with_label_values(&["bus"])
            .set(i64::from(ok));
        ok
    }

    /// Expires members past their TTL and publishes the bumps.
    pub async fn sweep_presence(&self) {
        match self.presence.sweep(1000).await {
            Ok(changed) => {
                for (key, version) in changed {
                    METRICS
                        .presence_changes
                        .with_label_values(&["expire"])
                        .inc();
                    self.members_moved(&key, version).await;
                }
            }
            Err(e) => tracing::debug!(error = %e, "presence sweep failed"),
        }
    }

    /// Applies what the bus says to the version caches, until the
    /// subscription ends.
    pub async fn follow_bus(&self) {
        let mut rx = self.bus.subscribe();
        while let Some(event) = rx.recv().await {
            match event {
                BusEvent::Up => {
                    self.caches.messages.set_live(true);
                    self.caches.members.set_live(true);
                }
                BusEvent::Down => {
                    self.caches.messages.set_live(false);
                    self.caches.members.set_live(false);
                }
                BusEvent::Message(BusMessage::Room { key, version }) => {
                    self.caches.messages.update(key, version)
                }
                BusEvent::Message(BusMessage::Members { key, version }) => {
                    self.caches.members.update(key, version)
                }
                BusEvent::Message(BusMessage::Heartbeat { .. }) => {}
            }
        }
        self.caches.messages.set_live(false);
        self.caches.members.set_live(false);
    }
}
