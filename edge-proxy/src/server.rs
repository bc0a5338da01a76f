//! Assembles the pingora `Server`: the protected proxy, the upstream load
//! balancer, the bus subscriber and the operator's port, with the drain
//! settings taken from `--drain-timeout`.

use std::sync::Arc;

use async_trait::async_trait;
use chatty_shared::{Bus, RedisBusConfig};
use parking_lot::Mutex;
use pingora::apps::http_app::HttpServer;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use crate::admin::Admin;
use crate::config::{ConfigError, EdgeConfig};
use crate::fetch::Fetcher;
use crate::hold::Holds;
use crate::listen::{self, ListenError};
use crate::metrics::metrics;
use crate::presence::{self, Presence};
use crate::protect::{Limits, Protected};
use crate::proxy::EdgeProxy;
use crate::shortcut::Shortcut;
use crate::subscriber::{BusService, BusState, Feed};
use crate::upstreams;
use crate::versions::VersionMap;

/// Where the edge hears version bumps.
#[derive(Clone, Default)]
pub enum BusSource {
    /// No bus: the edge learns only from the answers it forwards.
    #[default]
    None,
    /// Redis pub/sub (cluster mode).
    Redis(RedisBusConfig),
    /// A bus in this process (`chatty up`); subscribed inside the edge.
    Shared(Arc<dyn Bus>),
}

impl std::fmt::Debug for BusSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BusSource::None => f.write_str("None"),
            BusSource::Redis(c) => f.debug_tuple("Redis").field(&c.channel()).finish(),
            BusSource::Shared(_) => f.write_str("Shared"),
        }
    }
}

impl BusSource {
    /// The bus named by `--redis-url`, if any.
    pub fn from_config(config: &EdgeConfig) -> Self {
        config.redis_bus().map_or(BusSource::None, BusSource::Redis)
    }
}

/// Why the edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("bad configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("pingora configuration: {0}")]
    Pingora(String),
    #[error("{0}")]
    Listen(#[from] ListenError),
}

/// The pingora server configuration implied by `config`: threads, and a
/// drain that fits in `--drain-timeout` (listeners close at once on SIGTERM;
/// requests in flight get the grace period, then one more second before the
/// runtimes are stopped).
fn server_conf(config: &EdgeConfig, opt: &Opt) -> Result<ServerConf, EdgeError> {
    let mut conf = match &opt.conf {
        Some(_) => ServerConf::load_yaml_with_opt_override(opt)
            .map_err(|e| EdgeError::Pingora(e.to_string()))?,
        None => ServerConf::new_with_opt_override(opt)
            .ok_or_else(|| EdgeError::Pingora("cannot build the default configuration".into()))?,
    };
    let drain = config.drain_timeout.as_secs().max(1);
    conf.threads = config.threads;
    conf.grace_period_seconds = Some(drain - 1);
    conf.graceful_shutdown_timeout_seconds = Some(1);
    Ok(conf)
}

/// Builds the server; nothing is bound until it runs, but outside a
/// graceful upgrade both addresses are checked free first, so a taken port
/// fails the start at once.
pub fn build(mut config: EdgeConfig, bus: BusSource) -> Result<Server, EdgeError> {
    config.validate()?;
    let opt = std::mem::take(&mut config.pingora);
    if !opt.upgrade {
        listen::check_addresses(&config)?;
    }
    let conf = server_conf(&config, &opt)?;
    let opt = Opt { conf: None, ..opt };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let map = Arc::new(VersionMap::new(config.max_rooms, config.max_age));
    let holds = Arc::new(Holds::new(config.max_held));
    metrics().max_held.set(config.max_held as i64);
    map.tell_moves_to(holds.clone());
    server.add_service(background_service(
        "release held",
        ReleaseHeld(holds.clone()),
    ));

    let lb = background_service("upstreams", upstreams::build(&config.upstreams));
    let lb_task = lb.task();
    let lb_handle = server.add_service(lb);
    let fetcher = Arc::new(Fetcher::new(lb_task.clone()));
    let presence = Arc::new(Presence::new(config.presence_every));
    server.add_service(background_service(
        "presence",
        ReportPresence(presence.clone(), fetcher.clone()),
    ));

    let bus_state = match bus {
        BusSource::None => None,
        BusSource::Redis(c) => Some((Feed::Redis(c), Arc::new(BusState::default()))),
        BusSource::Shared(b) => Some((Feed::Shared(b), Arc::new(BusState::default()))),
    };
    let bus_state = bus_state.map(|(feed, state)| {
        let service = BusService::new(feed, map.clone(), state.clone());
        server.add_service(background_service("bus", service));
        state
    });

    let proxy = pingora::proxy::http_proxy(
        &server.configuration,
        EdgeProxy::new(
            (map.clone(), holds, presence),
            (lb_task.clone(), fetcher),
            config.max_body_bytes,
            config.page_cache_bytes,
        ),
    );
    let limits = Limits {
        header_timeout: config.header_timeout,
        max_header_bytes: config.max_header_bytes,
        max_conns_per_ip: config.max_conns_per_ip,
        ip_rate: config.ip_rate.0,
    };
    let shortcut = Shortcut::new(map.clone());
    let mut edge = Service::new("edge".to_owned(), Protected::new(proxy, limits, shortcut));
    // No read buffer per connection (pingora's default is 64 KiB): the
    // protections read each request head into a buffer of their own, and a
    // held poll or an open stream keeps its connection for minutes, so the
    // buffer would be most of what a held guest costs the edge.
    edge.add_listener(
        ListenerConfig::tcp(config.listen.to_string())
            .l4_buffer(L4BufferSettings::default().read(0)),
    );
    let edge_handle = server.add_service(edge);
    edge_handle.add_dependency(&lb_handle);

    let mut admin = Service::new(
        "admin".to_owned(),
        HttpServer::new_app(Admin::new(map, bus_state, lb_task)),
    );
    admin.add_tcp(&config.metrics_listen.to_string());
    admin.threads = Some(1);
    server.add_service(admin);

    tracing::info!(
        listen = %config.listen,
        metrics = %config.metrics_listen,
        upstreams = ?config.upstreams,
        threads = config.threads,
        "edge starting"
    );
    Ok(server)
}

/// Runs the edge until SIGTERM (drain), SIGINT (fast stop) or SIGQUIT
/// (graceful upgrade: hand the listeners to a new process started with
/// `--upgrade`), then exits the process. Exits 64 on bad configuration.
pub fn run(config: EdgeConfig, bus: BusSource) -> ! {
    match build(config, bus) {
        Ok(server) => server.run_forever(),
        Err(e) => {
            tracing::error!(error = %e, "edge cannot start");
            eprintln!("edge-proxy: {e}");
            std::process::exit(chatty_shared::EXIT_BAD_CONFIG)
        }
    }
}

/// Runs the edge on the calling thread until `stop` fires (or is dropped),
/// then drains as on SIGTERM and returns. For embedding and tests.
pub fn run_until(
    config: EdgeConfig,
    bus: BusSource,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<(), EdgeError> {
    let server = build(config, bus)?;
    server.run(RunArgs {
        shutdown_signal: Box::new(StopSignal(Mutex::new(Some(stop)))),
    });
    Ok(())
}

/// Releases every held poll (with its `304`) and ends every stream (with
/// a `retry:` hint) the moment the edge starts to stop, on SIGTERM as on a
/// graceful upgrade, so no client waits for the drain.
struct ReleaseHeld(Arc<Holds>);

#[async_trait]
impl BackgroundService for ReleaseHeld {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let _ = shutdown.wait_for(|stopping| *stopping).await;
        self.0.close();
    }
}

/// Sends the batched presence reports until the edge stops.
struct ReportPresence(Arc<Presence>, Arc<Fetcher>);

#[async_trait]
impl BackgroundService for ReportPresence {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tokio::select! {
            _ = presence::report(self.0.clone(), self.1.clone()) => {}
            _ = shutdown.wait_for(|stopping| *stopping) => {}
        }
    }
}

struct StopSignal(Mutex<Option<tokio::sync::oneshot::Receiver<()>>>);

#[async_trait]
impl ShutdownSignalWatch for StopSignal {
    async fn recv(&self) -> ShutdownSignal {
        let rx = self.0.lock().take();
        if let Some(rx) = rx {
            let _ = rx.await;
        }
        ShutdownSignal::GracefulTerminate
    }
}
