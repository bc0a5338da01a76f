//! `chatty up`: the whole of Chatty on this machine. With no MySQL or Redis
//! URL, the edge and one API node run in this one process on the embedded
//! store (SQLite under --data-dir) and an in-process bus. With --mysql-url
//! and --redis-url, a local cluster: --api-nodes chat-api processes and the
//! edge in this process, on the Redis bus.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command};

use anyhow::Context;
use chatty_shared::config::{parse_rate_setting, RateSetting, EXIT_BAD_CONFIG};
use clap::Args;
use edge_proxy::{BusSource, EdgeConfig};

/// Flags of `chatty up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Address of the edge: the one address browsers and clients use.
    #[arg(long, env = "CHATTY_UP_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Address of the edge's /metrics, /healthz and /readyz (port 0: any
    /// free port).
    #[arg(long, env = "CHATTY_UP_METRICS_LISTEN", default_value = "127.0.0.1:0")]
    pub metrics_listen: SocketAddr,

    /// Directory of the embedded store and its token key.
    #[arg(long, env = "CHATTY_DATA_DIR", default_value = ".chatty")]
    pub data_dir: PathBuf,

    /// MySQL URL: run a local cluster on it (with --redis-url).
    #[arg(long, env = "CHATTY_MYSQL_URL", requires = "redis_url")]
    pub mysql_url: Option<String>,

    /// Redis URL: the cluster's bus, presence and rate limits.
    #[arg(long, env = "CHATTY_REDIS_URL", requires = "mysql_url")]
    pub redis_url: Option<String>,

    /// API nodes of the local cluster, on the ports after --listen's.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub api_nodes: u16,

    /// Operator token of the admin API (`chatty site add --target`).
    #[arg(long, env = "CHATTY_ADMIN_TOKEN")]
    pub admin_token: Option<String>,

    /// Sends per guest on the API nodes (`N/DURATION` or `off`).
    #[arg(long, env = "CHATTY_GUEST_RATE", default_value = "10/10s")]
    pub guest_rate: String,

    /// Joins and sends per client address on the API nodes (`N/DURATION` or
    /// `off`). `off` lifts every per-address limit of the stack: the edge's
    /// request rate and connection cap too. Every simulated guest of
    /// `chatty load` comes from one address: use `off` for load runs.
    #[arg(long, env = "CHATTY_IP_RATE", default_value = "60/10s")]
    pub ip_rate: String,

    /// Token key of the cluster's API nodes (at least 32 bytes); generated
    /// into --data-dir when absent.
    #[arg(long, env = "CHATTY_TOKEN_KEY")]
    pub token_key: Option<String>,
}

/// Runs the stack until SIGTERM or Ctrl-C; answers the exit status.
pub fn main(args: UpArgs) -> i32 {
    chatty_shared::telemetry::init(Default::default());
    match up(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("chatty up: {e:#}");
            EXIT_BAD_CONFIG
        }
    }
}

fn up(args: UpArgs) -> anyhow::Result<()> {
    // Bad rates are refused before anything starts.
    rate(&args.guest_rate).context("--guest-rate")?;
    let per_address_limits = rate(&args.ip_rate).context("--ip-rate")?.0.is_some();
    let mut edge = EdgeConfig {
        listen: args.listen,
        metrics_listen: free_if_zero(args.metrics_listen)?,
        ..EdgeConfig::default()
    };
    if !per_address_limits {
        edge.ip_rate = RateSetting(None);
        edge.max_conns_per_ip = u32::MAX;
    }
    let mut children = Vec::new();
    let bus = match (&args.mysql_url, &args.redis_url) {
        (Some(mysql), Some(redis)) => {
            let key = cluster_token_key(&args)?;
            for n in 0..args.api_nodes {
                let port = args
                    .listen
                    .port()
                    .checked_add(1 + n)
                    .context("--listen's port leaves no room for the API nodes")?;
                let addr = SocketAddr::new(args.listen.ip(), port);
                children.push(spawn_api_node(addr, mysql, redis, &key, &args)?);
                edge.upstreams.push(addr.to_string());
            }
            edge.redis_url = Some(redis.clone());
            BusSource::from_config(&edge)
        }
        _ => {
            let (addr, bus) = start_embedded_api(&args)?;
            edge.upstreams.push(addr.to_string());
            BusSource::Shared(bus)
        }
    };
    edge.validate().context("edge configuration")?;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("signal runtime");
        rt.block_on(wait_for_stop());
        let _ = stop_tx.send(());
    });
    println!("Chatty is up: http://{}/", args.listen);
    println!("  edge metrics: http://{}/metrics", edge.metrics_listen);
    let result = edge_proxy::run_until(edge, bus, stop_rx);
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    result.context("edge")
}

async fn wait_for_stop() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// A concrete address for a port-0 request, so it can be printed.
fn free_if_zero(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let l = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    Ok(l.local_addr()?)
}

/// Starts the embedded API node on a loopback port of its own, on a runtime
/// of its own; answers its address and its (in-process) bus.
fn start_embedded_api(
    args: &UpArgs,
) -> anyhow::Result<(SocketAddr, std::sync::Arc<dyn chatty_shared::bus::Bus>)> {
    let mut config = chat_api::Config::embedded(&args.data_dir);
    config.admin_token = args.admin_token.clone();
    config.guest_rate = rate(&args.guest_rate)?;
    config.ip_rate = rate(&args.ip_rate)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("chat-api")
        .enable_all()
        .build()
        .context("API runtime")?;
    let app = rt.block_on(chat_api::App::build(config))?;
    let bus = app.bus();
    let listener = TcpListener::bind("127.0.0.1:0").context("binding the API node")?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name("chat-api".into())
        .spawn(move || {
            if let Err(e) = rt.block_on(app.run(listener, std::future::pending())) {
                tracing::error!(error = %e, "the API node stopped");
            }
        })
        .context("API thread")?;
    Ok((addr, bus))
}

fn rate(s: &str) -> anyhow::Result<RateSetting> {
    parse_rate_setting(s).map_err(anyhow::Error::msg)
}

/// The token key the cluster's nodes share: given, or kept in --data-dir.
fn cluster_token_key(args: &UpArgs) -> anyhow::Result<String> {
    if let Some(k) = &args.token_key {
        return Ok(k.clone());
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let path = args.data_dir.join("cluster-token.key");
    if let Ok(k) = std::fs::read_to_string(&path) {
        return Ok(k.trim().to_owned());
    }
    let key = chat_api::new_token_key();
    std::fs::write(&path, &key).with_context(|| format!("writing {}", path.display()))?;
    Ok(key)
}

/// A `chat-api` process beside this binary.
fn spawn_api_node(
    addr: SocketAddr,
    mysql: &str,
    redis: &str,
    key: &str,
    args: &UpArgs,
) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("chat-api");
    let mut cmd = Command::new(&bin);
    cmd.arg("--listen")
        .arg(addr.to_string())
        .arg("--mysql-url")
        .arg(mysql)
        .arg("--redis-url")
        .arg(redis)
        .arg("--token-key")
        .arg(key)
        .arg("--demo-site")
        .arg("--guest-rate")
        .arg(&args.guest_rate)
        .arg("--ip-rate")
        .arg(&args.ip_rate);
    if let Some(t) = &args.admin_token {
        cmd.arg("--admin-token").arg(t);
    }
    cmd.spawn().with_context(|| {
        format!(
            "starting {} (build it with `cargo build --workspace --bins`)",
            bin.display()
        )
    })
}
