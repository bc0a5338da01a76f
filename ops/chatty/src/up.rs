//! `chatty up`: the whole of Chatty on this machine. With no MySQL or Redis
//! URL, the edge and one API node run in this one process on the embedded
//! store (SQLite under --data-dir) and an in-process bus. With --mysql-url
//! and --redis-url, a local cluster: --api-nodes chat-api processes and the
//! edge in this process, on the Redis bus.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::Context;
use chatty_shared::{parse_rate_setting, RateSetting, EXIT_BAD_CONFIG};
use clap::Args;
use edge_proxy::{BusSource, EdgeConfig};

use crate::fresh::Fresh;

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

    /// Redis key prefix of the cluster (default: the nodes' and edge's own).
    #[arg(long, requires = "redis_url")]
    pub redis_prefix: Option<String>,

    /// Run the cluster on a database and key prefix of its own,
    /// `chatty_TAG_<random>` on --mysql-url's server and `TAG<random>:`,
    /// both removed when it stops (benchmarks use `--fresh bench`).
    #[arg(long, value_name = "TAG", requires = "mysql_url")]
    pub fresh: Option<String>,

    /// Worker threads of the edge (default: the edge's own default).
    #[arg(long)]
    pub edge_threads: Option<usize>,

    /// Held polls and event streams the edge keeps open at once, together
    /// (the edge's `--max-held`).
    #[arg(long, env = "CHATTY_EDGE_MAX_HELD", default_value_t = edge_proxy::DEFAULT_MAX_HELD)]
    pub max_held: usize,

    /// Once the stack answers, write its addresses and process ids into
    /// FILE as shell `KEY=value` lines (for scripts: `. FILE`); removed
    /// when it stops.
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,
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
    let edge = edge_config(&args)?;
    // A taken port fails the start before anything else runs.
    edge_proxy::check_addresses(&edge)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    let fresh = match (&args.fresh, &args.mysql_url, &args.redis_url) {
        (Some(tag), Some(mysql), Some(redis)) => {
            Some(rt.block_on(Fresh::create(mysql, redis, tag))?)
        }
        _ => None,
    };
    let result = run_stack(&args, edge, fresh.as_ref());
    if let Some(fresh) = fresh {
        if let Err(e) = rt.block_on(fresh.remove()) {
            tracing::warn!(error = %format!("{e:#}"), database = %fresh.database, "the fresh database or keys were not removed");
        }
    }
    if let Some(path) = &args.ready_file {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// The edge's configuration from the flags (bad rates are refused here).
fn edge_config(args: &UpArgs) -> anyhow::Result<EdgeConfig> {
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
    if let Some(threads) = args.edge_threads {
        edge.threads = threads;
    }
    edge.max_held = args.max_held;
    Ok(edge)
}

/// Starts the API nodes (and waits until they are ready), then runs the
/// edge on this thread until a stop signal.
fn run_stack(args: &UpArgs, mut edge: EdgeConfig, fresh: Option<&Fresh>) -> anyhow::Result<()> {
    let mut nodes = Nodes(Vec::new());
    let mut api_urls = Vec::new();
    let bus = match (&args.mysql_url, &args.redis_url) {
        (Some(mysql), Some(redis)) => {
            let backends = Backends {
                mysql: fresh.map_or(mysql.as_str(), |f| f.mysql_url.as_str()),
                redis,
                prefix: fresh
                    .map(|f| f.redis_prefix.as_str())
                    .or(args.redis_prefix.as_deref()),
                token_key: cluster_token_key(args)?,
            };
            for n in 0..args.api_nodes {
                let port = args
                    .listen
                    .port()
                    .checked_add(1 + n)
                    .context("--listen's port leaves no room for the API nodes")?;
                let addr = SocketAddr::new(args.listen.ip(), port);
                nodes.0.push(spawn_api_node(addr, &backends, args)?);
                edge.upstreams.push(addr.to_string());
            }
            for (child, addr) in nodes.0.iter_mut().zip(&edge.upstreams) {
                wait_node_ready(child, addr)?;
                api_urls.push(format!("http://{addr}"));
            }
            edge.redis_url = Some(redis.clone());
            if let Some(prefix) = backends.prefix {
                edge.redis_prefix = prefix.to_owned();
            }
            BusSource::from_config(&edge)
        }
        _ => {
            let (addr, bus) = start_embedded_api(args)?;
            edge.upstreams.push(addr.to_string());
            api_urls.push(format!("http://{addr}"));
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
    if let Some(path) = &args.ready_file {
        let ready = ReadyFile {
            edge: &edge,
            api_urls: &api_urls,
            api_pids: nodes.0.iter().map(Child::id).collect(),
            fresh,
        };
        ready.write_when_up(path.clone())?;
    }
    edge_proxy::run_until(edge, bus, stop_rx).context("edge")
}

/// The cluster's API processes, killed when dropped (on every way out).
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the nodes of a local cluster store in and share.
struct Backends<'a> {
    mysql: &'a str,
    redis: &'a str,
    prefix: Option<&'a str>,
    token_key: String,
}

/// What `--ready-file` says about the running stack.
struct ReadyFile<'a> {
    edge: &'a EdgeConfig,
    api_urls: &'a [String],
    api_pids: Vec<u32>,
    fresh: Option<&'a Fresh>,
}

impl ReadyFile<'_> {
    /// The file's lines: no secret (URLs with passwords stay out).
    fn text(&self) -> String {
        let pids: Vec<String> = self.api_pids.iter().map(u32::to_string).collect();
        let mut text = format!(
            "CHATTY_URL=http://{}\nCHATTY_PID={}\nCHATTY_EDGE_METRICS=http://{}/metrics\n\
             CHATTY_API_URLS=\"{}\"\nCHATTY_API_PIDS=\"{}\"\n",
            self.edge.listen,
            std::process::id(),
            self.edge.metrics_listen,
            self.api_urls.join(" "),
            pids.join(" "),
        );
        if let Some(fresh) = self.fresh {
            text += &format!(
                "CHATTY_DATABASE={}\nCHATTY_REDIS_PREFIX={}\n",
                fresh.database, fresh.redis_prefix
            );
        }
        text
    }

    /// Writes the file (whole, by a rename) once the edge answers on both
    /// of its addresses, from a thread of its own.
    fn write_when_up(&self, path: PathBuf) -> anyhow::Result<()> {
        let text = self.text();
        let (listen, metrics) = (self.edge.listen, self.edge.metrics_listen);
        std::thread::Builder::new()
            .name("ready-file".into())
            .spawn(move || {
                let deadline = Instant::now() + READY_LIMIT;
                while !(answers_ok(metrics, "/healthz") && TcpStream::connect(listen).is_ok()) {
                    if Instant::now() > deadline {
                        tracing::error!("the edge did not answer: no ready file");
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let tmp = path.with_extension("tmp");
                let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path));
                if let Err(e) = written {
                    tracing::error!(error = %e, path = %path.display(), "cannot write the ready file");
                }
            })
            .context("ready-file thread")?;
        Ok(())
    }
}

/// How long an API node or the edge may take to answer ready.
const READY_LIMIT: Duration = Duration::from_secs(60);

/// Waits until the node at `addr` answers `/readyz`; fails if it exits
/// first (its port taken, its database unreachable: its log says).
fn wait_node_ready(child: &mut Child, addr: &str) -> anyhow::Result<()> {
    let sock: SocketAddr = addr.parse().context("node address")?;
    let deadline = Instant::now() + READY_LIMIT;
    while !answers_ok(sock, "/readyz") {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the API node on {addr} exited ({status}) before it was ready");
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the API node on {addr} was not ready within {READY_LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Whether `GET path` on `addr` answers 200 now (HTTP/1.1, one connection).
fn answers_ok(addr: SocketAddr, path: &str) -> bool {
    let probe = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head)?;
        Ok(head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"))
    };
    probe().unwrap_or(false)
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
) -> anyhow::Result<(SocketAddr, std::sync::Arc<dyn chatty_shared::Bus>)> {
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

/// A `chat-api` process beside this binary. The URLs (which may hold
/// passwords), the token key and the operator token go through the
/// environment: a command line is readable by every local user.
fn spawn_api_node(addr: SocketAddr, backends: &Backends, args: &UpArgs) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("chat-api");
    let mut cmd = Command::new(&bin);
    cmd.arg("--listen")
        .arg(addr.to_string())
        .arg("--demo-site")
        .arg("--guest-rate")
        .arg(&args.guest_rate)
        .arg("--ip-rate")
        .arg(&args.ip_rate)
        .env("CHATTY_MYSQL_URL", backends.mysql)
        .env("CHATTY_REDIS_URL", backends.redis)
        .env("CHATTY_TOKEN_KEY", &backends.token_key);
    if let Some(prefix) = backends.prefix {
        cmd.arg("--redis-prefix").arg(prefix);
    }
    if let Some(t) = &args.admin_token {
        cmd.env("CHATTY_ADMIN_TOKEN", t);
    }
    cmd.spawn().with_context(|| {
        format!(
            "starting {} (build it with `cargo build --workspace --bins`)",
            bin.display()
        )
    })
}
