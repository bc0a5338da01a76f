//! The bus: version bumps published by API nodes after each commit and heard
//! by every edge. One channel carries three kinds of message, one text line
//! each:
//!
//! ```text
//! v1 r {site}/{room} {epoch} {seq}   a room's event log moved to (epoch, seq)
//! v1 m {site}/{room} {version}       a room's members list moved to version
//! v1 h {node}                        an API node is alive (every few hundred ms)
//! v1 s {site}                        a site's settings (limits, rules, slow
//!                                    mode, bans, timeouts) changed: forget
//!                                    what is cached
//! ```
//!
//! A subscriber ignores the kinds it has no use for (the edge ignores `s`);
//! one built before a kind existed drops its lines as malformed.
//!
//! Two implementations: [`RedisBus`] (pub/sub through fred, cluster mode) and
//! [`InProcessBus`] (a broadcast channel, embedded mode). Pub/sub is
//! at-most-once: a subscriber that was down or lagged hears [`BusEvent::Down`]
//! and must forget what it learned.
//!
//! The Redis behind the bus is one server, a primary found through Sentinel,
//! or a Redis Cluster, as the URL says ([`RedisTopology`]). On a Cluster the
//! channel is a sharded one (`SPUBLISH`/`SSUBSCRIBE`): only the shard that
//! owns its slot carries the bus, instead of every node of the cluster
//! relaying every line.

use std::sync::Arc;
use std::time::Duration;

use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::types::config::{Config, ReconnectError, ReconnectPolicy, ServerConfig};
use fred::types::Builder;
use tokio::sync::{broadcast, mpsc};

use crate::etag::RoomVersion;
use crate::room::RoomKey;

/// Longest node name carried by a heartbeat.
pub const MAX_NODE_LEN: usize = 64;

/// How often API nodes publish a heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);

/// One message on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusMessage {
    Room {
        key: RoomKey,
        version: RoomVersion,
    },
    Members {
        key: RoomKey,
        version: u64,
    },
    Heartbeat {
        node: String,
    },
    /// A site's settings changed; API nodes forget their cached copy.
    Site {
        site: String,
    },
}

/// Why a bus line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed bus message")]
pub struct DecodeError;

impl BusMessage {
    /// The wire form (one line, no newline).
    pub fn encode(&self) -> String {
        match self {
            BusMessage::Room { key, version } => {
                format!("v1 r {key} {} {}", version.epoch, version.seq)
            }
            BusMessage::Members { key, version } => format!("v1 m {key} {version}"),
            BusMessage::Heartbeat { node } => format!("v1 h {node}"),
            BusMessage::Site { site } => format!("v1 s {site}"),
        }
    }

    /// Parses the wire form; anything unexpected is an error, never a panic.
    pub fn decode(line: &[u8]) -> Result<Self, DecodeError> {
        let line = std::str::from_utf8(line).map_err(|_| DecodeError)?;
        let mut parts = line.split(' ');
        if parts.next() != Some("v1") {
            return Err(DecodeError);
        }
        let kind = parts.next().ok_or(DecodeError)?;
        let msg = match kind {
            "r" => {
                let key =
                    RoomKey::parse(parts.next().ok_or(DecodeError)?).map_err(|_| DecodeError)?;
                let epoch = number(parts.next())?;
                let seq = number(parts.next())?;
                BusMessage::Room {
                    key,
                    version: RoomVersion::new(epoch, seq),
                }
            }
            "m" => {
                let key =
                    RoomKey::parse(parts.next().ok_or(DecodeError)?).map_err(|_| DecodeError)?;
                BusMessage::Members {
                    key,
                    version: number(parts.next())?,
                }
            }
            "h" => {
                let node = parts.next().ok_or(DecodeError)?;
                if node.is_empty()
                    || node.len() > MAX_NODE_LEN
                    || !node.bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(DecodeError);
                }
                BusMessage::Heartbeat {
                    node: node.to_owned(),
                }
            }
            "s" => {
                let site = parts.next().ok_or(DecodeError)?;
                if !crate::room::is_valid_site(site.as_bytes()) {
                    return Err(DecodeError);
                }
                BusMessage::Site {
                    site: site.to_owned(),
                }
            }
            _ => return Err(DecodeError),
        };
        if parts.next().is_some() {
            return Err(DecodeError);
        }
        Ok(msg)
    }
}

fn number<T: std::str::FromStr>(part: Option<&str>) -> Result<T, DecodeError> {
    part.and_then(crate::decimal::parse_decimal)
        .ok_or(DecodeError)
}

/// What a subscriber hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusEvent {
    /// The subscription is (again) established; nothing heard before it counts.
    Up,
    /// The subscription is lost or lagged: bumps may have been missed.
    Down,
    Message(BusMessage),
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
#[error("bus unavailable: {0}")]
pub struct BusError(pub String);

/// The publishing side, as the API nodes see it.
#[async_trait::async_trait]
pub trait Bus: Send + Sync + 'static {
    async fn publish(&self, msg: &BusMessage) -> Result<(), BusError>;
    /// Reachability, for `/readyz`.
    async fn ping(&self) -> Result<(), BusError>;
    /// Starts a subscription on the current tokio runtime.
    fn subscribe(&self) -> mpsc::Receiver<BusEvent>;
}

/// Capacity of a subscription's queue; a subscriber further behind is told
/// [`BusEvent::Down`].
const QUEUE: usize = 65_536;

/// Messages fred may hold for the subscription before it counts as lagged
/// (fred's default of 32 overflows on a burst of sends, and a lagged
/// subscription makes every edge forget its whole map).
const SUBSCRIBER_BUFFER: usize = 8192;

/// The embedded bus: a broadcast channel inside one process.
#[derive(Debug, Clone)]
pub struct InProcessBus {
    tx: broadcast::Sender<BusMessage>,
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(QUEUE).0,
        }
    }
}

#[async_trait::async_trait]
impl Bus for InProcessBus {
    async fn publish(&self, msg: &BusMessage) -> Result<(), BusError> {
        // No subscriber is not an error: nobody needed to hear it.
        let _ = self.tx.send(msg.clone());
        Ok(())
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }

    fn subscribe(&self) -> mpsc::Receiver<BusEvent> {
        let mut rx = self.tx.subscribe();
        let (tx, out) = mpsc::channel(QUEUE);
        tokio::spawn(async move {
            if tx.send(BusEvent::Up).await.is_err() {
                return;
            }
            loop {
                let event = match rx.recv().await {
                    Ok(msg) => BusEvent::Message(msg),
                    Err(broadcast::error::RecvError::Lagged(_)) => BusEvent::Down,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let lagged = event == BusEvent::Down;
                if tx.send(event).await.is_err() {
                    return;
                }
                if lagged && tx.send(BusEvent::Up).await.is_err() {
                    return;
                }
            }
        });
        out
    }
}

/// Settings for the Redis bus.
#[derive(Debug, Clone)]
pub struct RedisBusConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// Prefix of every key and channel, so that deployments (and test runs)
    /// sharing one Redis never hear each other.
    pub prefix: String,
}

impl RedisBusConfig {
    pub fn channel(&self) -> String {
        format!("{}bus", self.prefix)
    }
}

/// What kind of Redis deployment a `--redis-url` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisTopology {
    /// One server: `redis://host:port/db` (or `rediss://`).
    Single,
    /// A primary and its replicas watched by Sentinels:
    /// `redis-sentinel://sentinel:26379/db?sentinelServiceName=NAME&node=sentinel2:26379…`.
    /// The client asks the Sentinels for the primary at every (re)connect.
    Sentinel,
    /// A Redis Cluster: `redis-cluster://node:port?node=node2:port…`
    /// (any of its nodes; the rest are discovered).
    Cluster,
}

/// The URL schemes `--redis-url` takes.
const SCHEMES: &[&str] = &[
    "redis://",
    "rediss://",
    "redis-sentinel://",
    "rediss-sentinel://",
    "redis-cluster://",
    "rediss-cluster://",
];

impl RedisTopology {
    /// Checks `url` and says what it names. The one check of a Redis URL:
    /// both binaries validate `--redis-url` with it before binding a port.
    pub fn of(url: &str) -> Result<RedisTopology, BusError> {
        if !SCHEMES.iter().any(|s| url.starts_with(s)) {
            return Err(BusError(
                "expected redis://host:port/db, \
                 redis-sentinel://host:port/db?sentinelServiceName=NAME&node=host:port… \
                 or redis-cluster://host:port?node=host:port… (rediss… for TLS)"
                    .into(),
            ));
        }
        let config = Config::from_url(url).map_err(|e| BusError(e.to_string()))?;
        Ok(match config.server {
            ServerConfig::Clustered { .. } => RedisTopology::Cluster,
            ServerConfig::Sentinel { .. } => RedisTopology::Sentinel,
            _ => RedisTopology::Single,
        })
    }
}

/// Builds a fred client for `url` that reconnects by itself, fails commands
/// fast while disconnected, and never blocks start-up on a first connect.
///
/// A failover is a reconnect: behind Sentinel, a lost primary means asking
/// the Sentinels again until they name the promoted replica (fred checks
/// its `ROLE` before using it); a connection still open to a server that
/// was demoted answers writes with `READONLY`, which is made a reconnect
/// too, as are `MASTERDOWN`, `LOADING` and `CLUSTERDOWN`.
pub fn redis_builder(url: &str) -> Result<Builder, BusError> {
    let config = Config::from_url(url).map_err(|e| BusError(e.to_string()))?;
    let mut builder = Builder::from_config(config);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_millis(500);
            c.internal_command_timeout = Duration::from_millis(500);
            c.max_command_attempts = 1;
            c.reconnect_errors = vec![
                ReconnectError::ReadOnly,
                ReconnectError::MasterDown,
                ReconnectError::Loading,
                ReconnectError::ClusterDown,
            ];
        })
        .with_performance_config(|p| {
            p.default_command_timeout = Duration::from_millis(500);
        })
        .set_policy(ReconnectPolicy::new_constant(0, 250));
    Ok(builder)
}

/// The cluster bus: Redis pub/sub on one channel (sharded on a Redis
/// Cluster).
pub struct RedisBus {
    config: RedisBusConfig,
    client: Client,
    sharded: bool,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("channel", &self.config.channel())
            .finish()
    }
}

impl RedisBus {
    /// Starts connecting in the background; publishes fail fast until Redis
    /// answers.
    pub fn connect(config: RedisBusConfig) -> Result<Arc<Self>, BusError> {
        let sharded = RedisTopology::of(&config.url)? == RedisTopology::Cluster;
        let client = redis_builder(&config.url)?
            .build()
            .map_err(|e| BusError(e.to_string()))?;
        start_connecting(&client);
        Ok(Arc::new(Self {
            config,
            client,
            sharded,
        }))
    }
}

/// Connects a fred client in the background, retrying the first connect
/// (fred's reconnect policy only applies after one success). Behind
/// Sentinel, the client also reconnects the moment the Sentinels announce
/// a new primary (`+switch-master`).
pub fn start_connecting(client: &(impl ClientLike + 'static)) {
    let watch = SentinelWatch::of(&client.client_config());
    let client = client.clone();
    tokio::spawn(async move {
        loop {
            let _task = client.connect();
            if client.wait_for_connect().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let Some(watch) = watch else { return };
        loop {
            watch.next_switch().await;
            tracing::info!("Redis primary switched: reconnecting");
            if let Err(e) = client.force_reconnection().await {
                tracing::debug!(error = %e, "reconnect after a switch of primary");
            }
        }
    });
}

/// The Sentinels of a `redis-sentinel://` URL, listened to for
/// `+switch-master`.
///
/// fred asks the Sentinels for the primary whenever it (re)connects, but
/// nothing makes it reconnect while the old primary still answers: after a
/// graceful failover (`SENTINEL FAILOVER`, maintenance) the old primary
/// stays a primary, taking writes that are then lost, until the Sentinels
/// demote it (about ten seconds later). Clients that reconnect on the
/// announcement move over at once, all together.
#[derive(Debug, Clone)]
struct SentinelWatch {
    hosts: Vec<fred::types::config::Server>,
    service: String,
    username: Option<String>,
    password: Option<String>,
}

impl SentinelWatch {
    /// The watch for a Sentinel configuration; `None` for anything else.
    fn of(config: &Config) -> Option<SentinelWatch> {
        match &config.server {
            ServerConfig::Sentinel {
                hosts,
                service_name,
                username,
                password,
            } => Some(SentinelWatch {
                hosts: hosts.clone(),
                service: service_name.clone(),
                username: username.clone(),
                password: password.clone(),
            }),
            _ => None,
        }
    }

    /// Returns when a Sentinel announces a new primary for the service,
    /// going from Sentinel to Sentinel while they are unreachable.
    async fn next_switch(&self) {
        let mut i = 0;
        loop {
            let host = &self.hosts[i % self.hosts.len()];
            i += 1;
            match self.listen(host).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::debug!(error = %e, sentinel = %host, "Sentinel watch lost");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    /// Listens to one Sentinel: `Ok` on a switch of this service's primary.
    async fn listen(&self, host: &fred::types::config::Server) -> Result<(), BusError> {
        let config = Config {
            server: ServerConfig::Centralized {
                server: host.clone(),
            },
            username: self.username.clone(),
            password: self.password.clone(),
            ..Config::default()
        };
        let client: SubscriberClient = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_millis(500);
                c.internal_command_timeout = Duration::from_millis(500);
            })
            .build_subscriber_client()
            .map_err(|e| BusError(e.to_string()))?;
        let _task = client.connect();
        let result = async {
            tokio::time::timeout(Duration::from_secs(1), client.wait_for_connect())
                .await
                .map_err(|_| BusError("Sentinel did not answer".into()))?
                .map_err(|e| BusError(e.to_string()))?;
            let mut errors = client.error_rx();
            let mut messages = client.message_rx();
            client
                .subscribe("+switch-master")
                .await
                .map_err(|e| BusError(e.to_string()))?;
            loop {
                tokio::select! {
                    msg = messages.recv() => {
                        let msg = msg.map_err(|e| BusError(e.to_string()))?;
                        // `<name> <old ip> <old port> <new ip> <new port>`
                        let text = msg.value.as_string().unwrap_or_default();
                        if text.split(' ').next() == Some(self.service.as_str()) {
                            return Ok(());
                        }
                    }
                    e = errors.recv() => {
                        let e = e.map_or_else(|e| e.to_string(), |(e, _)| e.to_string());
                        return Err(BusError(e));
                    }
                }
            }
        }
        .await;
        let _ = client.quit().await;
        result
    }
}

#[async_trait::async_trait]
impl Bus for RedisBus {
    async fn publish(&self, msg: &BusMessage) -> Result<(), BusError> {
        if !self.client.is_connected() {
            return Err(BusError("not connected".into()));
        }
        let (channel, line) = (self.config.channel(), msg.encode());
        let sent = if self.sharded {
            self.client.spublish::<(), _, _>(channel, line).await
        } else {
            self.client.publish::<(), _, _>(channel, line).await
        };
        sent.map_err(|e| BusError(e.to_string()))
    }

    async fn ping(&self) -> Result<(), BusError> {
        if !self.client.is_connected() {
            return Err(BusError("not connected".into()));
        }
        self.client
            .ping::<()>(None)
            .await
            .map_err(|e| BusError(e.to_string()))
    }

    fn subscribe(&self) -> mpsc::Receiver<BusEvent> {
        let (tx, out) = mpsc::channel(QUEUE);
        tokio::spawn(run_redis_subscription(self.config.clone(), tx));
        out
    }
}

/// Subscribes to the Redis bus until `tx` is dropped, reporting `Up` after
/// each (re)subscription and `Down` whenever the connection is lost, a
/// receiver lags, or the subscriber cannot be built.
pub async fn run_redis_subscription(config: RedisBusConfig, tx: mpsc::Sender<BusEvent>) {
    let channel = config.channel();
    loop {
        if tx.is_closed() {
            return;
        }
        match subscribe_once(&config, &channel, &tx).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "bus subscription lost");
                if tx.send(BusEvent::Down).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// One subscription's life: returns `Ok` when the receiver went away, `Err`
/// when the subscription broke.
async fn subscribe_once(
    config: &RedisBusConfig,
    channel: &str,
    tx: &mpsc::Sender<BusEvent>,
) -> Result<(), BusError> {
    let sharded = RedisTopology::of(&config.url)? == RedisTopology::Cluster;
    let watch =
        SentinelWatch::of(&Config::from_url(&config.url).map_err(|e| BusError(e.to_string()))?);
    let client: SubscriberClient = redis_builder(&config.url)?
        .with_performance_config(|p| p.broadcast_channel_capacity = SUBSCRIBER_BUFFER)
        .build_subscriber_client()
        .map_err(|e| BusError(e.to_string()))?;
    let _task = client.connect();
    let result = async {
        client
            .wait_for_connect()
            .await
            .map_err(|e| BusError(e.to_string()))?;
        // fred reconnects by itself, to the promoted primary after a
        // failover too, but does not subscribe again, and a quick reconnect
        // is over before `is_connected` would show it: any connection error
        // or reconnect ends this subscription (bumps may have been missed).
        let mut errors = client.error_rx();
        let mut reconnects = client.reconnect_rx();
        let mut messages = client.message_rx();
        let subscribed = if sharded {
            client.ssubscribe(channel).await
        } else {
            client.subscribe(channel).await
        };
        subscribed.map_err(|e| BusError(e.to_string()))?;
        if tx.send(BusEvent::Up).await.is_err() {
            return Ok(());
        }
        let switched = async {
            match &watch {
                Some(w) => w.next_switch().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(switched);
        let mut check = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                msg = messages.recv() => match msg {
                    Ok(msg) => {
                        let Some(bytes) = msg.value.as_bytes() else { continue };
                        match BusMessage::decode(bytes) {
                            Ok(m) => {
                                if tx.send(BusEvent::Message(m)).await.is_err() {
                                    return Ok(());
                                }
                            }
                            Err(_) => tracing::debug!("ignored a malformed bus message"),
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        return Err(BusError(format!("lagged by {n} messages")));
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(BusError("subscriber closed".into()));
                    }
                },
                e = errors.recv() => {
                    let e = e.map_or_else(|e| e.to_string(), |(e, _)| e.to_string());
                    return Err(BusError(format!("connection error: {e}")));
                }
                _ = reconnects.recv() => {
                    return Err(BusError("reconnected".into()));
                }
                () = &mut switched => {
                    return Err(BusError("the Sentinels switched the primary".into()));
                }
                _ = check.tick() => {
                    if !client.is_connected() {
                        return Err(BusError("connection lost".into()));
                    }
                    if tx.is_closed() {
                        return Ok(());
                    }
                }
            }
        }
    }
    .await;
    let _ = client.quit().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> RoomKey {
        RoomKey::new("demo", "lobby").unwrap()
    }

    #[test]
    fn round_trips() {
        for msg in [
            BusMessage::Room {
                key: key(),
                version: RoomVersion::new(7, 12),
            },
            BusMessage::Members {
                key: key(),
                version: 99,
            },
            BusMessage::Heartbeat {
                node: "api-1".into(),
            },
            BusMessage::Site {
                site: "demo".into(),
            },
        ] {
            assert_eq!(BusMessage::decode(msg.encode().as_bytes()), Ok(msg));
        }
        assert_eq!(
            BusMessage::Room {
                key: key(),
                version: RoomVersion::new(7, 12)
            }
            .encode(),
            "v1 r demo/lobby 7 12"
        );
        assert_eq!(
            BusMessage::Site {
                site: "acme".into()
            }
            .encode(),
            "v1 s acme"
        );
    }

    #[test]
    fn refuses_malformed_lines() {
        for bad in [
            "",
            "v1",
            "v2 r demo/lobby 1 2",
            "v1 r demo/lobby 1",
            "v1 r demo/lobby 1 2 3",
            "v1 r demo 1 2",
            "v1 r demo/lobby -1 2",
            "v1 r demo/lobby 1 99999999999999999999999",
            "v1 r demo/lobby 4294967296 1",
            "v1 m demo/lobby",
            "v1 h ",
            "v1 x demo/lobby 1",
            "v1  r demo/lobby 1 2",
            "v1 s",
            "v1 s ",
            "v1 s Demo",
            "v1 s demo/lobby",
            "v1 s demo extra",
        ] {
            assert_eq!(
                BusMessage::decode(bad.as_bytes()),
                Err(DecodeError),
                "{bad:?}"
            );
        }
        assert_eq!(BusMessage::decode(&[0xff, 0xfe]), Err(DecodeError));
    }

    #[test]
    fn tells_the_topology_from_the_url() {
        use RedisTopology::*;
        let check = |url: &str, expect: Option<RedisTopology>| {
            assert_eq!(RedisTopology::of(url).ok(), expect, "{url}");
        };
        check("redis://127.0.0.1:6379", Some(Single));
        check("redis://127.0.0.1:6379/2", Some(Single));
        check(
            "redis-sentinel://10.0.0.1:26379/0?sentinelServiceName=chatty&node=10.0.0.2:26379&node=10.0.0.3:26379",
            Some(Sentinel),
        );
        check(
            "redis-sentinel://s1:26379?sentinelServiceName=chatty",
            Some(Sentinel),
        );
        check(
            "redis-sentinel://:pw@chatty-redis.cache.svc.cluster.local:26379/0?sentinelServiceName=mymaster&sentinelPassword=pw",
            Some(Sentinel),
        );
        check(
            "redis-cluster://10.0.0.1:7000?node=10.0.0.2:7000&node=10.0.0.3:7000",
            Some(Cluster),
        );
        check("redis-cluster://10.0.0.1:7000", Some(Cluster));
        check("redis-sentinel://s1:26379", None);
        check("http://127.0.0.1:6379", None);
        check("127.0.0.1:6379", None);
        check("", None);
    }

    #[tokio::test]
    async fn in_process_bus_delivers_in_order() {
        let bus = InProcessBus::default();
        let mut sub = bus.subscribe();
        assert_eq!(sub.recv().await, Some(BusEvent::Up));
        for seq in 1..=3 {
            bus.publish(&BusMessage::Room {
                key: key(),
                version: RoomVersion::new(1, seq),
            })
            .await
            .unwrap();
        }
        for seq in 1..=3 {
            assert_eq!(
                sub.recv().await,
                Some(BusEvent::Message(BusMessage::Room {
                    key: key(),
                    version: RoomVersion::new(1, seq)
                }))
            );
        }
    }
}
