//! The chat-api command line (clap derive, every flag also `CHATTY_<NAME>`)
//! and its validation, done before any port is bound (exit 64 on failure).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chatty_shared::telemetry::LogFormat;
pub use chatty_shared::RateSetting;
use chatty_shared::MAX_NODE_LEN;
use chatty_shared::{parse_duration, parse_rate, parse_rate_setting};
use clap::Parser;

fn log_format(s: &str) -> Result<LogFormat, String> {
    s.parse()
}

/// A Chatty API node.
///
/// With no --mysql-url and no --redis-url it runs embedded: SQLite under
/// --data-dir, an in-process bus, in-process presence and rate limits.
#[derive(Debug, Clone, Parser)]
#[command(name = "chat-api", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "CHATTY_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,

    /// Directory of the embedded store (SQLite) and the generated token key.
    #[arg(long, env = "CHATTY_DATA_DIR", default_value = ".chatty")]
    pub data_dir: PathBuf,

    /// MySQL/MariaDB URL (`mysql://user:pass@host:3306/db`); cluster mode.
    #[arg(long, env = "CHATTY_MYSQL_URL")]
    pub mysql_url: Option<String>,

    /// Redis URL: bus, presence and rate limits. One server
    /// (`redis://host:6379/db`), a primary behind Sentinel
    /// (`redis-sentinel://host:26379/db?sentinelServiceName=NAME&node=host2:26379…`)
    /// or a Cluster (`redis-cluster://host:port?node=host2:port…`).
    #[arg(long, env = "CHATTY_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key and channel of this deployment.
    #[arg(long, env = "CHATTY_REDIS_PREFIX", default_value = "chatty:")]
    pub redis_prefix: String,

    /// Operator token for /v1/admin (create and list sites); admin is off
    /// without it.
    #[arg(long, env = "CHATTY_ADMIN_TOKEN")]
    pub admin_token: Option<String>,

    /// Guest token key, at least 32 bytes; repeat (or comma-separate) to
    /// rotate: the first signs, all verify. Embedded mode generates one into
    /// --data-dir when none is given.
    #[arg(long, env = "CHATTY_TOKEN_KEY", value_delimiter = ',')]
    pub token_key: Vec<String>,

    /// Sends per guest (`N/DURATION` or `off`).
    #[arg(long, env = "CHATTY_GUEST_RATE", default_value = "10/10s", value_parser = parse_rate_setting)]
    pub guest_rate: RateSetting,

    /// Joins and sends per client IP (`N/DURATION` or `off`).
    #[arg(long, env = "CHATTY_IP_RATE", default_value = "60/10s", value_parser = parse_rate_setting)]
    pub ip_rate: RateSetting,

    /// Create the `demo` site (origins http://localhost and http://127.0.0.1
    /// on any port) at start; on by default when there is no --mysql-url.
    #[arg(long, env = "CHATTY_DEMO_SITE", num_args = 0..=1, default_missing_value = "true")]
    pub demo_site: Option<bool>,

    /// A guest leaves the members list this long after its last heartbeat.
    #[arg(long, env = "CHATTY_PRESENCE_TTL", default_value = "30s", value_parser = parse_duration)]
    pub presence_ttl: Duration,

    /// Longest message text in bytes (a site may set less).
    #[arg(long, env = "CHATTY_MAX_TEXT_BYTES", default_value_t = 2000)]
    pub max_text_bytes: u32,

    /// A store call not answered within this is a 503.
    #[arg(long, env = "CHATTY_STORE_TIMEOUT", default_value = "600ms", value_parser = parse_duration)]
    pub store_timeout: Duration,

    /// Most sends one store transaction holds (group commit): a node's
    /// sends queue to one writer, which stores what has queued, up to this
    /// many, in one transaction. 1: one send per transaction.
    #[arg(long, env = "CHATTY_SEND_BATCH", default_value_t = DEFAULT_SEND_BATCH)]
    pub send_batch: usize,

    /// How long the writer waits for more sends to fill a batch, beyond
    /// those queued already (`0ms`: never).
    #[arg(long, env = "CHATTY_SEND_BATCH_WAIT", default_value = "2ms", value_parser = parse_duration)]
    pub send_batch_wait: Duration,

    /// Most batches of sends in store transactions at once (each on its own
    /// connection; batches naming the same room wait on its row lock). With
    /// --send-batch 1, more than one gives one transaction per send side by
    /// side, as before group commit.
    #[arg(long, env = "CHATTY_SEND_BATCHES_IN_FLIGHT", default_value_t = DEFAULT_SEND_BATCHES_IN_FLIGHT)]
    pub send_batches_in_flight: usize,

    /// On SIGTERM, the node first answers /readyz with 503 and keeps serving
    /// for this long, so that edges (health checks every second) take it out
    /// of rotation before it stops accepting.
    #[arg(long, env = "CHATTY_DRAIN_DELAY", default_value = "2500ms", value_parser = parse_duration)]
    pub drain_delay: Duration,

    /// Then in-flight requests get this long to finish. The whole stop takes
    /// at most --drain-delay + --drain-timeout: keep that below the
    /// orchestrator's grace period.
    #[arg(long, env = "CHATTY_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// This node's name on the bus (default: hostname-pid).
    #[arg(long, env = "CHATTY_NODE_NAME")]
    pub node_name: Option<String>,

    /// Log format: text or json.
    #[arg(long, env = "CHATTY_LOG_FORMAT", default_value = "text", value_parser = log_format)]
    pub log_format: LogFormat,

    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "CHATTY_WORKERS")]
    pub workers: Option<usize>,
}

/// Default of --send-batch.
pub const DEFAULT_SEND_BATCH: usize = 64;

/// Default of --send-batches-in-flight.
pub const DEFAULT_SEND_BATCHES_IN_FLIGHT: usize = 1;

/// Most accepted --send-batches-in-flight: half of a node's MySQL
/// connections, so that reads still find one.
pub const MAX_SEND_BATCHES_IN_FLIGHT: usize = 8;

/// Longest accepted --send-batch-wait.
pub const MAX_SEND_BATCH_WAIT: Duration = Duration::from_millis(100);

/// Largest accepted --max-text-bytes (a message must fit the 16 KiB body).
pub const MAX_TEXT_BYTES_LIMIT: u32 = 8000;

/// Why the configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// The embedded defaults with a given data directory, for tests and
    /// tools that build a config without a command line.
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.into(),
            mysql_url: None,
            redis_url: None,
            redis_prefix: "chatty:".into(),
            admin_token: None,
            token_key: Vec::new(),
            guest_rate: RateSetting(parse_rate("10/10s").ok().flatten()),
            ip_rate: RateSetting(parse_rate("60/10s").ok().flatten()),
            demo_site: None,
            presence_ttl: Duration::from_secs(30),
            max_text_bytes: 2000,
            store_timeout: Duration::from_millis(600),
            send_batch: DEFAULT_SEND_BATCH,
            send_batch_wait: Duration::from_millis(2),
            send_batches_in_flight: DEFAULT_SEND_BATCHES_IN_FLIGHT,
            drain_delay: Duration::from_millis(2500),
            drain_timeout: Duration::from_secs(10),
            node_name: None,
            log_format: LogFormat::Text,
            workers: None,
        }
    }

    /// True when no MySQL is configured (SQLite under --data-dir).
    pub fn embedded_store(&self) -> bool {
        self.mysql_url.is_none()
    }

    /// Whether the `demo` site is created at start.
    pub fn demo_site_enabled(&self) -> bool {
        self.demo_site.unwrap_or(self.mysql_url.is_none())
    }

    /// The node name: --node-name, else `hostname-pid`, cut to what the bus
    /// carries.
    pub fn node_name(&self) -> String {
        if let Some(n) = &self.node_name {
            return n.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "chat-api".into());
        let host: String = host
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(40)
            .collect();
        format!("{host}-{}", std::process::id())
    }

    /// Checks every flag; called before anything is bound or opened.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        if let Some(url) = &self.mysql_url {
            if !url.starts_with("mysql://") {
                return bad("--mysql-url must start with mysql://".into());
            }
        }
        if let Some(url) = &self.redis_url {
            if let Err(e) = chatty_shared::RedisTopology::of(url) {
                return bad(format!("--redis-url: {e}"));
            }
        }
        if self.redis_prefix.len() > 64 || !self.redis_prefix.bytes().all(|b| b.is_ascii_graphic())
        {
            return bad("--redis-prefix must be at most 64 printable ASCII characters".into());
        }
        for (i, key) in self.token_key.iter().enumerate() {
            if key.len() < crate::token::MIN_KEY_BYTES {
                return bad(format!("--token-key #{} is shorter than 32 bytes", i + 1));
            }
        }
        if self.token_key.is_empty() && !self.embedded_store() {
            return bad(
                "--token-key is required with --mysql-url (every node must share it)".into(),
            );
        }
        if let Some(t) = &self.admin_token {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return bad("--admin-token must be printable ASCII without spaces".into());
            }
        }
        if self.presence_ttl < Duration::from_secs(1) {
            return bad("--presence-ttl must be at least 1s".into());
        }
        if self.max_text_bytes == 0 || self.max_text_bytes > MAX_TEXT_BYTES_LIMIT {
            return bad(format!(
                "--max-text-bytes must be 1..={MAX_TEXT_BYTES_LIMIT}"
            ));
        }
        if self.store_timeout.is_zero() {
            return bad("--store-timeout must be positive".into());
        }
        if self.send_batch == 0 || self.send_batch > crate::store::MAX_BATCH {
            return bad(format!(
                "--send-batch must be 1..={}",
                crate::store::MAX_BATCH
            ));
        }
        if self.send_batch_wait > MAX_SEND_BATCH_WAIT || self.send_batch_wait >= self.store_timeout
        {
            return bad(format!(
                "--send-batch-wait must be at most {MAX_SEND_BATCH_WAIT:?} and below --store-timeout"
            ));
        }
        if self.send_batches_in_flight == 0
            || self.send_batches_in_flight > MAX_SEND_BATCHES_IN_FLIGHT
        {
            return bad(format!(
                "--send-batches-in-flight must be 1..={MAX_SEND_BATCHES_IN_FLIGHT}"
            ));
        }
        if let Some(n) = &self.node_name {
            if n.is_empty() || n.len() > MAX_NODE_LEN || !n.bytes().all(|b| b.is_ascii_graphic()) {
                return bad(format!(
                    "--node-name must be 1-{MAX_NODE_LEN} printable ASCII characters"
                ));
            }
        }
        if let Some(w) = self.workers {
            if w == 0 || w > 512 {
                return bad("--workers must be 1..=512".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        let mut all = vec!["chat-api"];
        all.extend_from_slice(args);
        Config::try_parse_from(all)
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::embedded("x");
        assert!(c.validate().is_ok());
        assert!(c.demo_site_enabled());
        assert_eq!(c.guest_rate.0.unwrap().count, 10);
        assert_eq!(c.ip_rate.0.unwrap().per, Duration::from_secs(10));
        assert!(c.node_name().len() <= MAX_NODE_LEN);
    }

    #[test]
    fn parses_flags() {
        let c = parse(&[
            "--mysql-url",
            "mysql://root@127.0.0.1:3306/x",
            "--token-key",
            &"k".repeat(32),
            "--token-key",
            &"j".repeat(40),
            "--guest-rate",
            "off",
            "--presence-ttl",
            "5s",
            "--demo-site",
        ])
        .unwrap();
        assert_eq!(c.token_key.len(), 2);
        assert_eq!(c.guest_rate, RateSetting(None));
        assert_eq!(c.presence_ttl, Duration::from_secs(5));
        assert!(c.demo_site_enabled());
        assert!(c.validate().is_ok());
        let c = parse(&["--demo-site", "false"]).unwrap();
        assert!(!c.demo_site_enabled());
        assert!(parse(&["--guest-rate", "x"]).is_err());
        assert!(parse(&["--store-timeout", "5"]).is_err());
        assert!(parse(&["--log-format", "xml"]).is_err());
        let c = parse(&["--send-batch", "1", "--send-batch-wait", "0ms"]).unwrap();
        assert_eq!((c.send_batch, c.send_batch_wait), (1, Duration::ZERO));
        assert!(c.validate().is_ok());
        let c = parse(&[]).unwrap();
        assert_eq!(
            (c.send_batch, c.send_batch_wait),
            (DEFAULT_SEND_BATCH, Duration::from_millis(2))
        );
        assert!(parse(&["--send-batch", "-1"]).is_err());
        assert!(parse(&["--send-batch-wait", "2"]).is_err());
    }

    #[test]
    fn send_batch_limits() {
        let check = |batch: usize, wait_ms: u64, store_ms: u64, ok: bool| {
            let mut c = Config::embedded("x");
            c.send_batch = batch;
            c.send_batch_wait = Duration::from_millis(wait_ms);
            c.store_timeout = Duration::from_millis(store_ms);
            assert_eq!(c.validate().is_ok(), ok, "{batch} {wait_ms}ms {store_ms}ms");
        };
        check(1, 0, 600, true);
        check(64, 2, 600, true);
        check(crate::store::MAX_BATCH, 100, 600, true);
        check(0, 2, 600, false);
        check(crate::store::MAX_BATCH + 1, 2, 600, false);
        check(64, 101, 600, false);
        check(64, 50, 50, false);
        let in_flight = |n: usize| {
            let mut c = Config::embedded("x");
            c.send_batches_in_flight = n;
            c.validate().is_ok()
        };
        assert_eq!(
            [
                0,
                1,
                MAX_SEND_BATCHES_IN_FLIGHT,
                MAX_SEND_BATCHES_IN_FLIGHT + 1
            ]
            .map(in_flight),
            [false, true, true, false]
        );
    }

    #[test]
    fn validation() {
        let mut c = Config::embedded("x");
        c.token_key = vec!["short".into()];
        assert!(c.validate().is_err());
        let mut c = Config::embedded("x");
        c.mysql_url = Some("mysql://root@127.0.0.1/x".into());
        assert!(c.validate().is_err(), "cluster mode needs a shared key");
        assert!(!c.demo_site_enabled());
        let mut c = Config::embedded("x");
        c.redis_url = Some("http://x".into());
        assert!(c.validate().is_err());
        let mut c = Config::embedded("x");
        c.max_text_bytes = 0;
        assert!(c.validate().is_err());
        let mut c = Config::embedded("x");
        c.node_name = Some("a b".into());
        assert!(c.validate().is_err());
    }
}
