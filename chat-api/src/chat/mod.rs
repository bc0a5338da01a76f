//! A node's chat service, [`Chat`]: the store, the bus, presence, rate
//! limits and the version caches put together, and the helpers its use
//! cases share (timed store calls, publishing, site and room lookups,
//! token checks). The use cases are in the files beside: `guest.rs` (what a
//! guest does in a room), `presence.rs` (the edge's presence batches),
//! `admin.rs` (site owners and the operator) and `node.rs` (the node's own
//! life); `writer.rs` stores the node's sends in batches. Handlers in `routes/` only translate
//! HTTP to and from these calls.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatty_shared::wire::Event;
use chatty_shared::Rate;
use chatty_shared::RoomVersion;
use chatty_shared::{is_valid_site, RoomKey};
use chatty_shared::{Bus, BusMessage};

use crate::cache::{RoomCaches, TimedCache, SITE_MAX_AGE};
use crate::error::ApiError;
use crate::host_token::UserKey;
use crate::limits::{Check, Decision, Limiter};
use crate::metrics::{StoreOp, METRICS};
use crate::presence::Presence;
use crate::rules::Rules;
use crate::store::{Appended, SiteRecord, Standing, Store, StoreError};
use crate::token::{now_secs, Claims, TokenError, TokenKeys};

mod admin;
mod guest;
mod identity;
mod moderation;
mod node;
mod presence;
mod rules;
mod standing;
mod writer;

pub use moderation::utc;

/// Events per page of `GET …/messages`.
pub(crate) const PAGE_SIZE: usize = 100;
/// Messages in a join's initial sync.
pub(crate) const JOIN_MESSAGES: usize = 50;
/// The demo site's id.
pub(crate) const DEMO_SITE: &str = "demo";
/// The demo site's origins: localhost and 127.0.0.1 on any port.
pub(crate) const DEMO_ORIGINS: &[&str] = &["http://localhost:*", "http://127.0.0.1:*"];

/// The settings the use cases need, taken from the config.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub store_timeout: Duration,
    /// Most sends per store transaction.
    pub send_batch: usize,
    /// How long the writer waits for more sends to fill a batch.
    pub send_batch_wait: Duration,
    /// Most batches in flight at once.
    pub send_batches_in_flight: usize,
    pub presence_ttl: Duration,
    pub max_text_bytes: u32,
    pub guest_rate: Option<Rate>,
    pub ip_rate: Option<Rate>,
    /// SHA-256 of the operator token; admin is off without one.
    pub admin_token_hash: Option<[u8; 32]>,
    pub demo_site: bool,
    pub node: String,
}

/// What a conditional read of a room resource answers.
#[derive(Debug)]
pub(crate) enum Poll<T> {
    /// The client's ETag is current.
    NotModified,
    Fresh(T),
}

/// A conditional read of a room resource and the version it answered for.
#[derive(Debug)]
pub(crate) struct Polled<T, V> {
    pub poll: Poll<T>,
    pub version: V,
}

/// An event written to a room's log, or found there when nothing was
/// written (a retried send, a message deleted before).
#[derive(Debug)]
pub(crate) struct Written {
    pub event: Event,
    /// The room's version right after the write (its current version when
    /// nothing was written).
    pub version: RoomVersion,
    /// Whether this call wrote it.
    pub created: bool,
}

impl From<Appended> for Written {
    fn from(a: Appended) -> Self {
        Self {
            event: a.event,
            version: a.version,
            created: a.created,
        }
    }
}

/// What a limit guards, for the answer and the metrics: a rate (`ip`,
/// `guest`) or a room's slow mode.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Guard {
    Rate(&'static str),
    SlowMode,
}

/// One node's chat service.
pub struct Chat {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) presence: Arc<dyn Presence>,
    pub(crate) limiter: Arc<dyn Limiter>,
    pub(crate) keys: TokenKeys,
    pub(crate) settings: Settings,
    pub(crate) caches: RoomCaches,
    /// The queue of this node's sends, stored in batches.
    pub(crate) writer: writer::Writer,
    /// Site records, or "no such site", by id.
    sites: TimedCache<String, Option<Arc<SiteRecord>>>,
    /// Sites' rules, compiled, by site id.
    rules: TimedCache<String, Arc<Rules>>,
    /// Rooms' own slow mode (`None`: the site's).
    room_slow_mode: TimedCache<RoomKey, Option<u32>>,
    /// Sites' bans and running timeouts (`None`: too many to keep).
    standing: TimedCache<String, Option<Arc<Standing>>>,
    /// Sites' user-token keys, by site id.
    user_keys: TimedCache<String, Arc<Vec<UserKey>>>,
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
    pub(crate) fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        presence: Arc<dyn Presence>,
        limiter: Arc<dyn Limiter>,
        keys: TokenKeys,
        settings: Settings,
    ) -> Self {
        let writer = writer::Writer::new(writer::BatchLimits {
            max: settings.send_batch,
            wait: settings.send_batch_wait,
            max_queued: settings.store_timeout,
            in_flight: settings.send_batches_in_flight,
        });
        Self {
            store,
            bus,
            presence,
            limiter,
            keys,
            settings,
            caches: RoomCaches::default(),
            writer,
            sites: TimedCache::new(SITE_MAX_AGE),
            rules: TimedCache::new(SITE_MAX_AGE),
            room_slow_mode: TimedCache::new(SITE_MAX_AGE),
            standing: TimedCache::new(SITE_MAX_AGE),
            user_keys: TimedCache::new(SITE_MAX_AGE),
            bus_up: AtomicBool::new(true),
            draining: AtomicBool::new(false),
        }
    }

    /// Runs a store call with the store timeout, timing it; a timeout is
    /// [`StoreError::Timeout`].
    pub(crate) async fn store_call<T>(
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
    pub(crate) async fn publish(&self, msg: BusMessage) {
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

    /// Starts the task that stores the queued sends; it ends when the
    /// service is dropped.
    pub(crate) fn start_writer(self: &Arc<Self>) {
        self.writer.start(Arc::downgrade(self));
    }

    async fn room_moved(&self, key: &RoomKey, version: RoomVersion) {
        self.caches.messages.update(key.clone(), version);
        self.publish(BusMessage::Room {
            key: key.clone(),
            version,
        })
        .await;
    }

    /// The room's members changed (`change`: join, leave or expire): the
    /// change is counted, the version cached and published.
    async fn members_moved(&self, key: &RoomKey, change: &'static str, version: u64) {
        METRICS.presence_changes.with_label_values(&[change]).inc();
        self.publish_members(key, version).await;
    }

    /// The room's members list is at `version`: cached and published (the
    /// changes that led there are counted by the caller).
    async fn publish_members(&self, key: &RoomKey, version: u64) {
        self.caches.members.update(key.clone(), version);
        self.publish(BusMessage::Members {
            key: key.clone(),
            version,
        })
        .await;
    }

    /// The site record, from the cache or the store; 404 when unknown.
    pub(crate) async fn site(&self, id: &str) -> Result<Arc<SiteRecord>, ApiError> {
        if !is_valid_site(id.as_bytes()) {
            return Err(ApiError::NotFound("no such site".into()));
        }
        let id = id.to_owned();
        let rec = self
            .sites
            .get_or_load(&id, || async {
                let rec = self.store_call(StoreOp::Site, self.store.site(&id)).await?;
                Ok::<_, ApiError>(rec.map(Arc::new))
            })
            .await?;
        rec.ok_or_else(|| ApiError::NotFound("no such site".into()))
    }

    /// Validates the path parts and looks up the site.
    pub(crate) async fn room(
        &self,
        site: &str,
        room: &str,
    ) -> Result<(RoomKey, Arc<SiteRecord>), ApiError> {
        let rec = self.site(site).await?;
        let key = RoomKey::new(site, room).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        Ok((key, rec))
    }

    /// Asks every limit together (one round trip to a shared limiter);
    /// the first refusal, in the given order, answers.
    async fn pass(&self, limits: Vec<(Guard, Check)>) -> Result<(), ApiError> {
        let (guards, checks): (Vec<Guard>, Vec<Check>) = limits.into_iter().unzip();
        let decisions = self.limiter.check_all(&checks).await;
        for (guard, decision) in guards.into_iter().zip(decisions) {
            if let Decision::Limited { retry_after } = decision {
                return Err(match guard {
                    Guard::SlowMode => {
                        METRICS
                            .rules_applied
                            .with_label_values(&["slow_mode"])
                            .inc();
                        ApiError::SlowMode { retry_after }
                    }
                    Guard::Rate(scope) => {
                        METRICS.rate_limited.with_label_values(&[scope]).inc();
                        ApiError::RateLimited { retry_after }
                    }
                });
            }
        }
        Ok(())
    }

    /// Verifies a guest token for this room.
    pub(crate) fn verify(&self, token: Option<&str>, key: &RoomKey) -> Result<Claims, ApiError> {
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
}
