//! The bus subscriber: a pingora background service that feeds version bumps
//! into the map, and forgets the map when the bus is lost or falls silent.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatty_shared::BusTrust;
use chatty_shared::{Bus, BusEvent, BusMessage, RedisBusConfig};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::mpsc;

use crate::versions::{Tick, VersionMap};

/// Longest silence (no message at all) before the map is forgotten. API
/// nodes heartbeat every 250 ms.
pub const MAX_SILENCE: Duration = Duration::from_secs(1);

/// How often silence is checked.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Where bumps come from.
#[derive(Clone)]
pub enum Feed {
    /// Redis pub/sub; the client is built inside the service's runtime.
    Redis(RedisBusConfig),
    /// A bus in this process (`chatty up`).
    Shared(Arc<dyn Bus>),
}

/// What the edge knows of the bus, shared with metrics and `/readyz`: the
/// shared rule of when versions learned from it may be trusted.
#[derive(Debug, Default)]
pub struct BusState {
    trust: BusTrust,
}

impl BusState {
    /// True while subscribed and heard from within [`MAX_SILENCE`].
    pub fn is_up(&self) -> bool {
        self.trust.is_up()
    }

    /// Tick of the last message of any kind.
    pub fn last_message(&self) -> Option<Tick> {
        self.trust.last_heard().map(Tick)
    }

    /// Applies one event of the subscription.
    pub fn apply(&self, map: &VersionMap, event: BusEvent, now: Tick) {
        match event {
            BusEvent::Up => {
                tracing::info!("bus subscription established");
                self.trust.heard(now.0);
            }
            BusEvent::Down => {
                if self.trust.lost() {
                    tracing::warn!("bus subscription lost: forgetting every room version");
                }
                map.clear(now);
            }
            BusEvent::Message(msg) => {
                if self.trust.heard(now.0) {
                    tracing::info!("bus heard again");
                }
                match msg {
                    BusMessage::Room { key, version } => {
                        map.observe_messages(map.room_hash(key.site(), key.room()), version, now);
                    }
                    BusMessage::Members { key, version } => {
                        map.observe_members(map.room_hash(key.site(), key.room()), version, now);
                    }
                    // Heartbeats prove the bus alive (above); site changes
                    // are for the API nodes' caches.
                    BusMessage::Heartbeat { .. } | BusMessage::Site { .. } => {}
                }
            }
        }
    }

    /// Forgets the map once when the bus has been silent too long.
    pub fn check_silence(&self, map: &VersionMap, now: Tick) {
        if self.trust.fell_silent(now.0, MAX_SILENCE) {
            let silent_ms = self.trust.last_heard().map_or(0, |last| now.0 - last);
            tracing::warn!(silent_ms, "bus silent: forgetting every room version");
            map.clear(now);
        }
    }
}

/// The background service running the subscription.
pub struct BusService {
    feed: Feed,
    map: Arc<VersionMap>,
    state: Arc<BusState>,
}

impl BusService {
    pub fn new(feed: Feed, map: Arc<VersionMap>, state: Arc<BusState>) -> Self {
        Self { feed, map, state }
    }

    fn subscribe(&self) -> mpsc::Receiver<BusEvent> {
        match &self.feed {
            Feed::Redis(config) => {
                let (tx, rx) = mpsc::channel(65_536);
                tokio::spawn(chatty_shared::run_redis_subscription(config.clone(), tx));
                rx
            }
            Feed::Shared(bus) => bus.subscribe(),
        }
    }
}

#[async_trait]
impl BackgroundService for BusService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Built here, inside this service's runtime (after any daemonizing).
        let mut events = self.subscribe();
        let mut check = tokio::time::interval(CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        break;
                    }
                }
                event = events.recv() => match event {
                    Some(event) => self.state.apply(&self.map, event, self.map.now()),
                    None => {
                        self.state.apply(&self.map, BusEvent::Down, self.map.now());
                        tracing::error!("bus subscription ended");
                        let _ = shutdown.changed().await;
                        break;
                    }
                },
                _ = check.tick() => self.state.check_silence(&self.map, self.map.now()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatty_shared::InProcessBus;
    use chatty_shared::RoomKey;
    use chatty_shared::RoomVersion;

    fn bump(seq: u64) -> BusEvent {
        BusEvent::Message(BusMessage::Room {
            key: RoomKey::new("demo", "lobby").unwrap(),
            version: RoomVersion::new(1, seq),
        })
    }

    fn heartbeat() -> BusEvent {
        BusEvent::Message(BusMessage::Heartbeat {
            node: "api-1".into(),
        })
    }

    #[test]
    fn bumps_feed_the_map_and_down_forgets_it() {
        let map = VersionMap::new(1000, Duration::from_secs(5));
        let s = BusState::default();
        assert!(!s.is_up());
        s.apply(&map, BusEvent::Up, Tick(10));
        assert!(s.is_up());
        s.apply(&map, bump(3), Tick(20));
        s.apply(
            &map,
            BusEvent::Message(BusMessage::Members {
                key: RoomKey::new("demo", "lobby").unwrap(),
                version: 4,
            }),
            Tick(20),
        );
        assert_eq!(
            map.fresh_messages("demo", "lobby", Tick(30)),
            Some(RoomVersion::new(1, 3))
        );
        assert_eq!(map.fresh_members("demo", "lobby", Tick(30)), Some(4));
        s.apply(&map, BusEvent::Down, Tick(40));
        assert!(!s.is_up());
        assert!(map.is_empty());
        assert_eq!(map.resets(), 1);
        s.apply(&map, BusEvent::Up, Tick(50));
        assert!(s.is_up());
        assert!(map.is_empty(), "Up relearns, it does not restore");
    }

    #[test]
    fn silence_forgets_once_and_a_message_brings_it_back() {
        let map = VersionMap::new(1000, Duration::from_secs(5));
        let s = BusState::default();
        s.apply(&map, BusEvent::Up, Tick(0));
        s.apply(&map, bump(1), Tick(100));
        s.apply(&map, heartbeat(), Tick(350));
        s.check_silence(&map, Tick(1350));
        assert!(s.is_up());
        assert_eq!(map.len(), 1);
        s.check_silence(&map, Tick(1351));
        assert!(!s.is_up());
        assert!(map.is_empty());
        s.check_silence(&map, Tick(2000));
        assert_eq!(map.resets(), 1, "forgets once per silence");
        s.apply(&map, heartbeat(), Tick(2100));
        assert!(s.is_up());
        assert_eq!(s.last_message(), Some(Tick(2100)));
    }

    #[tokio::test]
    async fn in_process_bus_through_the_service() {
        let map = Arc::new(VersionMap::new(1000, Duration::from_secs(5)));
        let state = Arc::new(BusState::default());
        let bus = Arc::new(InProcessBus::default());
        let service = BusService::new(Feed::Shared(bus.clone()), map.clone(), state.clone());
        let (tx, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move { service.start(rx).await });
        for _ in 0..100 {
            if state.is_up() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(state.is_up());
        bus.publish(&BusMessage::Room {
            key: RoomKey::new("demo", "lobby").unwrap(),
            version: RoomVersion::new(9, 9),
        })
        .await
        .unwrap();
        for _ in 0..100 {
            if !map.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            map.fresh_messages("demo", "lobby", map.now()),
            Some(RoomVersion::new(9, 9))
        );
        tx.send(true).unwrap();
        task.await.unwrap();
    }
}
