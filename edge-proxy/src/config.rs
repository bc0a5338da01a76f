//! The edge's configuration: flags (clap, env `CHATTY_EDGE_…`), defaults,
//! and validation before any port is bound.

use std::net::SocketAddr;
use std::time::Duration;

use chatty_shared::telemetry::LogFormat;
use chatty_shared::{parse_duration, parse_rate_setting, RateSetting};
use clap::Parser;

/// Default `--listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default `--metrics-listen`.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9090";
/// Default `--redis-prefix`.
pub const DEFAULT_REDIS_PREFIX: &str = "chatty:";
/// Default `--max-age`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(5);
/// Default `--max-rooms`.
pub const DEFAULT_MAX_ROOMS: usize = 1_000_000;
/// Default `--header-timeout`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `--max-header-bytes`.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16_384;
/// Default `--max-body-bytes`.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 16_384;
/// Default `--max-conns-per-ip`.
pub const DEFAULT_MAX_CONNS_PER_IP: u32 = 256;
/// Default `--ip-rate`: requests per client address. A browser polling
/// every 2 s makes about one request a second, so this lets some 300
/// visitors share one address (an office behind one NAT).
pub const DEFAULT_IP_RATE: &str = "3000/10s";
/// Default `--page-cache-bytes`.
pub const DEFAULT_PAGE_CACHE_BYTES: usize = 64 << 20;
/// Default `--max-held`.
pub const DEFAULT_MAX_HELD: usize = 10_000;
/// Default `--presence-every`.
pub const DEFAULT_PRESENCE_EVERY: Duration = Duration::from_secs(10);
/// Default `--drain-timeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("at least one --upstream is required")]
    NoUpstream,
    #[error("--upstream {0:?}: expected host:port")]
    BadUpstream(String),
    #[error("--redis-url: {0}")]
    BadRedisUrl(String),
    #[error("--redis-prefix must be 1-64 printable characters without spaces")]
    BadRedisPrefix,
    #[error("--max-age must be between 1ms and 1h")]
    BadMaxAge,
    #[error("--max-rooms must be between 64 and 100000000")]
    BadMaxRooms,
    #[error("--page-cache-bytes must be at most 17179869184 (16 GiB)")]
    BadPageCacheBytes,
    #[error("--threads must be between 1 and 1024")]
    BadThreads,
    #[error("--header-timeout must be between 100ms and 10m")]
    BadHeaderTimeout,
    #[error("--max-header-bytes must be between 1024 and 1048576")]
    BadMaxHeaderBytes,
    #[error("--max-body-bytes must be between 1 and 1073741824")]
    BadMaxBodyBytes,
    #[error("--max-conns-per-ip must be at least 1")]
    BadMaxConnsPerIp,
    #[error("--max-held must be at most 10000000")]
    BadMaxHeld,
    #[error("--presence-every must be between 100ms and 10m")]
    BadPresenceEvery,
    #[error("--drain-timeout must be between 1s and 10m")]
    BadDrainTimeout,
    #[error("--listen and --metrics-listen must differ")]
    SameListen,
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The edge's settings. Parsed from flags by the binary, or built in code
/// (`EdgeConfig { upstreams: vec![..], ..EdgeConfig::default() }`) by
/// `chatty up` and by tests.
#[derive(Debug, Parser)]
#[command(
    name = "edge-proxy",
    version,
    about = "The Chatty edge: answers unchanged polls from memory and forwards the rest."
)]
pub struct EdgeConfig {
    /// Address the proxy listens on.
    #[arg(long, env = "CHATTY_EDGE_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// An API node, host:port (repeatable, or comma-separated in the
    /// environment). A DNS name is re-resolved every 5 s and each address
    /// it yields is a node.
    #[arg(long = "upstream", env = "CHATTY_EDGE_UPSTREAM", value_delimiter = ',')]
    pub upstreams: Vec<String>,

    /// Redis URL of the bus: redis://host:port/db, behind Sentinel
    /// redis-sentinel://host:26379/db?sentinelServiceName=NAME&node=host2:26379…,
    /// or a Cluster redis-cluster://host:port?node=host2:port…. Without it
    /// the edge learns only from the responses it forwards, bounded by
    /// --max-age.
    #[arg(long, env = "CHATTY_EDGE_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of the bus channel (`{prefix}bus`), as on the API nodes.
    #[arg(long, env = "CHATTY_EDGE_REDIS_PREFIX", default_value = DEFAULT_REDIS_PREFIX)]
    pub redis_prefix: String,

    /// How long a room's version is trusted after the authority last
    /// confirmed it (a forwarded response or a bus bump).
    #[arg(long, env = "CHATTY_EDGE_MAX_AGE", default_value = "5s", value_parser = parse_duration)]
    pub max_age: Duration,

    /// Most rooms the version map holds; beyond it, stale rooms are evicted.
    #[arg(long, env = "CHATTY_EDGE_MAX_ROOMS", default_value_t = DEFAULT_MAX_ROOMS)]
    pub max_rooms: usize,

    /// Bytes of poll answers kept to answer guests who are a message
    /// behind (0: no page cache).
    #[arg(long, env = "CHATTY_EDGE_PAGE_CACHE_BYTES", default_value_t = DEFAULT_PAGE_CACHE_BYTES)]
    pub page_cache_bytes: usize,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "CHATTY_EDGE_METRICS_LISTEN", default_value = DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: SocketAddr,

    /// Worker threads of the proxy (default: the number of cores).
    #[arg(long, env = "CHATTY_EDGE_THREADS", default_value_t = default_threads())]
    pub threads: usize,

    /// Time a client has to send a whole request header.
    #[arg(long, env = "CHATTY_EDGE_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// Largest request header accepted (431 beyond it).
    #[arg(long, env = "CHATTY_EDGE_MAX_HEADER_BYTES", default_value_t = DEFAULT_MAX_HEADER_BYTES)]
    pub max_header_bytes: usize,

    /// Largest request body accepted (413 beyond it).
    #[arg(long, env = "CHATTY_EDGE_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: u64,

    /// Most simultaneous connections from one client address.
    #[arg(long, env = "CHATTY_EDGE_MAX_CONNS_PER_IP", default_value_t = DEFAULT_MAX_CONNS_PER_IP)]
    pub max_conns_per_ip: u32,

    /// Requests per client address (`N/DURATION`, or `off`); more are
    /// answered 429 with Retry-After and the connection is closed.
    #[arg(long, env = "CHATTY_EDGE_IP_RATE", default_value = DEFAULT_IP_RATE, value_parser = parse_rate_setting)]
    pub ip_rate: RateSetting,

    /// Most polls held open (`Prefer: wait`) and event streams open at once,
    /// together; past it, a poll is answered at once as without the
    /// preference and a stream request as a poll (0: neither).
    #[arg(long, env = "CHATTY_EDGE_MAX_HELD", default_value_t = DEFAULT_MAX_HELD)]
    pub max_held: usize,

    /// How often the guests holding a poll or a stream at this edge are
    /// reported present to an API node, one request per room (keep it well
    /// below the API's `--presence-ttl`).
    #[arg(long, env = "CHATTY_EDGE_PRESENCE_EVERY", default_value = "10s", value_parser = parse_duration)]
    pub presence_every: Duration,

    /// Upper bound of a graceful stop (SIGTERM): listeners close at once,
    /// requests in flight get this long. Keep it below Kubernetes'
    /// terminationGracePeriodSeconds.
    #[arg(long, env = "CHATTY_EDGE_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Log format: text or json.
    #[arg(long, env = "CHATTY_EDGE_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// Pingora's own options: -u/--upgrade (take over the listeners of a
    /// running edge), -d/--daemon, -t/--test, -c/--conf (a Pingora YAML file,
    /// e.g. for pid_file and upgrade_sock).
    #[command(flatten)]
    pub pingora: pingora::server::configuration::Opt,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default"),
            upstreams: Vec::new(),
            redis_url: None,
            redis_prefix: DEFAULT_REDIS_PREFIX.to_owned(),
            max_age: DEFAULT_MAX_AGE,
            max_rooms: DEFAULT_MAX_ROOMS,
            page_cache_bytes: DEFAULT_PAGE_CACHE_BYTES,
            metrics_listen: DEFAULT_METRICS_LISTEN.parse().expect("valid default"),
            threads: default_threads(),
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_conns_per_ip: DEFAULT_MAX_CONNS_PER_IP,
            ip_rate: parse_rate_setting(DEFAULT_IP_RATE).expect("valid default"),
            max_held: DEFAULT_MAX_HELD,
            presence_every: DEFAULT_PRESENCE_EVERY,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            log_format: LogFormat::Text,
            pingora: Default::default(),
        }
    }
}

/// Splits `host:port` (`[v6]:port` too); `None` when malformed.
pub fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    valid.then_some((host, port))
}

impl EdgeConfig {
    /// Checks everything that can be checked without touching the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.upstreams.is_empty() {
            return Err(ConfigError::NoUpstream);
        }
        for u in &self.upstreams {
            if split_host_port(u.trim()).is_none() {
                return Err(ConfigError::BadUpstream(u.clone()));
            }
        }
        if let Some(url) = &self.redis_url {
            chatty_shared::RedisTopology::of(url).map_err(|e| ConfigError::BadRedisUrl(e.0))?;
            chatty_shared::redis_builder(url).map_err(|e| ConfigError::BadRedisUrl(e.0))?;
        }
        let p = &self.redis_prefix;
        if p.is_empty() || p.len() > 64 || !p.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::BadRedisPrefix);
        }
        if self.presence_every < Duration::from_millis(100)
            || self.presence_every > Duration::from_secs(600)
        {
            return Err(ConfigError::BadPresenceEvery);
        }
        if self.max_age < Duration::from_millis(1) || self.max_age > Duration::from_secs(3600) {
            return Err(ConfigError::BadMaxAge);
        }
        if !(64..=100_000_000).contains(&self.max_rooms) {
            return Err(ConfigError::BadMaxRooms);
        }
        if self.page_cache_bytes > 1 << 34 {
            return Err(ConfigError::BadPageCacheBytes);
        }
        if !(1..=1024).contains(&self.threads) {
            return Err(ConfigError::BadThreads);
        }
        if self.header_timeout < Duration::from_millis(100)
            || self.header_timeout > Duration::from_secs(600)
        {
            return Err(ConfigError::BadHeaderTimeout);
        }
        if !(1024..=1_048_576).contains(&self.max_header_bytes) {
            return Err(ConfigError::BadMaxHeaderBytes);
        }
        if !(1..=1 << 30).contains(&self.max_body_bytes) {
            return Err(ConfigError::BadMaxBodyBytes);
        }
        if self.max_conns_per_ip == 0 {
            return Err(ConfigError::BadMaxConnsPerIp);
        }
        if self.max_held > 10_000_000 {
            return Err(ConfigError::BadMaxHeld);
        }
        if self.drain_timeout < Duration::from_secs(1)
            || self.drain_timeout > Duration::from_secs(600)
        {
            return Err(ConfigError::BadDrainTimeout);
        }
        if self.listen == self.metrics_listen {
            return Err(ConfigError::SameListen);
        }
        Ok(())
    }

    /// The bus settings implied by `--redis-url`/`--redis-prefix`.
    pub fn redis_bus(&self) -> Option<chatty_shared::RedisBusConfig> {
        self.redis_url
            .as_ref()
            .map(|url| chatty_shared::RedisBusConfig {
                url: url.clone(),
                prefix: self.redis_prefix.clone(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> EdgeConfig {
        EdgeConfig {
            upstreams: vec!["127.0.0.1:8081".into()],
            ..EdgeConfig::default()
        }
    }

    #[test]
    fn defaults_match_the_flags() {
        let parsed = EdgeConfig::try_parse_from(["edge-proxy", "--upstream", "127.0.0.1:8081"]);
        // Flags may be overridden from the environment of the test run;
        // compare only when nothing is set.
        if std::env::vars().any(|(k, _)| k.starts_with("CHATTY_EDGE_")) {
            return;
        }
        let parsed = parsed.unwrap();
        let d = ok();
        assert_eq!(parsed.listen, d.listen);
        assert_eq!(parsed.metrics_listen, d.metrics_listen);
        assert_eq!(parsed.max_age, d.max_age);
        assert_eq!(parsed.max_rooms, d.max_rooms);
        assert_eq!(parsed.header_timeout, d.header_timeout);
        assert_eq!(parsed.max_header_bytes, d.max_header_bytes);
        assert_eq!(parsed.max_body_bytes, d.max_body_bytes);
        assert_eq!(parsed.max_conns_per_ip, d.max_conns_per_ip);
        assert_eq!(parsed.drain_timeout, d.drain_timeout);
        assert_eq!(parsed.max_held, d.max_held);
        assert_eq!(parsed.redis_prefix, d.redis_prefix);
        assert_eq!(parsed.upstreams, d.upstreams);
        assert!(parsed.validate().is_ok());
    }

    #[test]
    fn pingora_flags_are_flattened() {
        let c = EdgeConfig::try_parse_from([
            "edge-proxy",
            "-u",
            "--upstream",
            "a:1",
            "--upstream",
            "b.example:2",
            "--max-age",
            "750ms",
        ])
        .unwrap();
        assert!(c.pingora.upgrade);
        assert_eq!(c.upstreams, ["a:1", "b.example:2"]);
        assert_eq!(c.max_age, Duration::from_millis(750));
        assert!(EdgeConfig::try_parse_from(["edge-proxy", "--max-age", "5"]).is_err());
    }

    #[test]
    fn validation() {
        assert_eq!(ok().validate(), Ok(()));
        let cases: Vec<(EdgeConfig, ConfigError)> = vec![
            (EdgeConfig::default(), ConfigError::NoUpstream),
            (
                EdgeConfig {
                    upstreams: vec!["nohost".into()],
                    ..ok()
                },
                ConfigError::BadUpstream("nohost".into()),
            ),
            (
                EdgeConfig {
                    upstreams: vec!["a:0".into()],
                    ..ok()
                },
                ConfigError::BadUpstream("a:0".into()),
            ),
            (
                EdgeConfig {
                    upstreams: vec!["a b:80".into()],
                    ..ok()
                },
                ConfigError::BadUpstream("a b:80".into()),
            ),
            (
                EdgeConfig {
                    max_age: Duration::ZERO,
                    ..ok()
                },
                ConfigError::BadMaxAge,
            ),
            (
                EdgeConfig {
                    max_rooms: 10,
                    ..ok()
                },
                ConfigError::BadMaxRooms,
            ),
            (EdgeConfig { threads: 0, ..ok() }, ConfigError::BadThreads),
            (
                EdgeConfig {
                    max_header_bytes: 10,
                    ..ok()
                },
                ConfigError::BadMaxHeaderBytes,
            ),
            (
                EdgeConfig {
                    max_body_bytes: 0,
                    ..ok()
                },
                ConfigError::BadMaxBodyBytes,
            ),
            (
                EdgeConfig {
                    max_conns_per_ip: 0,
                    ..ok()
                },
                ConfigError::BadMaxConnsPerIp,
            ),
            (
                EdgeConfig {
                    max_held: 10_000_001,
                    ..ok()
                },
                ConfigError::BadMaxHeld,
            ),
            (
                EdgeConfig {
                    drain_timeout: Duration::from_millis(10),
                    ..ok()
                },
                ConfigError::BadDrainTimeout,
            ),
            (
                EdgeConfig {
                    metrics_listen: ok().listen,
                    ..ok()
                },
                ConfigError::SameListen,
            ),
            (
                EdgeConfig {
                    redis_prefix: "a b".into(),
                    ..ok()
                },
                ConfigError::BadRedisPrefix,
            ),
            (
                EdgeConfig {
                    redis_url: Some("http://nope".into()),
                    ..ok()
                },
                ConfigError::BadRedisUrl(String::new()),
            ),
        ];
        for (config, want) in cases {
            let got = config.validate().unwrap_err();
            if let ConfigError::BadRedisUrl(_) = want {
                assert!(matches!(got, ConfigError::BadRedisUrl(_)), "{got:?}");
            } else {
                assert_eq!(got, want);
            }
        }
        assert!(EdgeConfig {
            upstreams: vec!["[::1]:8081".into(), "api.chatty.svc:8081".into()],
            redis_url: Some("redis://127.0.0.1:6379/0".into()),
            ..ok()
        }
        .validate()
        .is_ok());
        for url in [
            "redis-sentinel://10.0.0.1:26379/0?sentinelServiceName=chatty&node=10.0.0.2:26379",
            "redis-cluster://10.0.0.1:7000?node=10.0.0.2:7000",
        ] {
            let config = EdgeConfig {
                redis_url: Some(url.into()),
                ..ok()
            };
            assert!(config.validate().is_ok(), "{url}");
        }
        let config = EdgeConfig {
            redis_url: Some("redis-sentinel://10.0.0.1:26379".into()),
            ..ok()
        };
        assert!(
            config.validate().is_err(),
            "a Sentinel URL names its service"
        );
    }
}
