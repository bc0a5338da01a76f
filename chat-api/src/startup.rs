//! Start-up and the server's life: `App::build` picks the backends
//! (embedded SQLite + in-process bus, presence and limits; or MySQL +
//! Redis), `App::run` serves on a given listener until the shutdown future
//! resolves, then reports not ready for --drain-delay while still serving,
//! then drains in-flight requests for at most --drain-timeout.
//! The send writer (group commit) starts with the service and ends with it.
//! Beside the HTTP server run the bus follower (version caches), the
//! heartbeat publisher (every 250 ms), the presence sweeper (every 1 s) and
//! the backend check (every 2 s).

use std::future::Future;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::{Service, ServiceResponse};
use actix_web::{web, HttpServer};
use anyhow::Context;
use chatty_shared::{Bus, InProcessBus, RedisBus, RedisBusConfig, HEARTBEAT_EVERY};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::chat::{Chat, Settings};
use crate::config::Config;
use crate::limits::Limiter;
use crate::metrics::{route_label, status_class, METRICS};
use crate::presence::Presence;
use crate::store::{MysqlStore, SqliteStore, Store};
use crate::token::TokenKeys;

/// How often expired members are swept.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How often the backends are checked for `chatty_api_backend_up`.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// How long start-up waits for MySQL before giving up.
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(20);

/// The bus, presence and rate limits of a node.
struct SideBackends {
    bus: Arc<dyn Bus>,
    presence: Arc<dyn Presence>,
    limiter: Arc<dyn Limiter>,
}

/// A built API node, ready to [`run`](App::run).
pub struct App {
    chat: web::Data<Chat>,
    config: Config,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("node", &self.chat.settings.node)
            .finish()
    }
}

/// The embedded token key: read from `data_dir/token.key`, created there
/// (mode 0600) when missing.
fn embedded_token_key(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("token.key");
    match std::fs::read_to_string(&path) {
        Ok(k) if k.trim().len() >= crate::token::MIN_KEY_BYTES => return Ok(k.trim().to_owned()),
        Ok(_) => anyhow::bail!("{} holds a key shorter than 32 bytes", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let key = crate::secrets::new_token_key();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    use std::io::Write;
    let mut f = opts
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(key.as_bytes())?;
    tracing::info!(path = %path.display(), "generated a token key");
    Ok(key)
}

async fn connect_mysql(url: &str, timeout: Duration) -> anyhow::Result<Arc<MysqlStore>> {
    let start = Instant::now();
    loop {
        match MysqlStore::connect(url, timeout).await {
            Ok(s) => return Ok(s),
            Err(e) if start.elapsed() < CONNECT_PATIENCE => {
                tracing::warn!(error = %e, "MySQL not ready; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e).context("connecting to MySQL"),
        }
    }
}

impl App {
    /// Validates the config, opens the store, connects the bus and
    /// backends, and creates the demo site when it is on. Binds nothing.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        config.validate()?;
        let node = config.node_name();

        let needs_dir = config.mysql_url.is_none() || config.token_key.is_empty();
        if needs_dir {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("creating {}", config.data_dir.display()))?;
        }

        let store = open_store(&config).await?;
        let keys = token_keys(&config)?;
        let SideBackends {
            bus,
            presence,
            limiter,
        } = side_backends(&config)?;
        let settings = Settings {
            store_timeout: config.store_timeout,
            send_batch: config.send_batch,
            send_batch_wait: config.send_batch_wait,
            send_batches_in_flight: config.send_batches_in_flight,
            presence_ttl: config.presence_ttl,
            max_text_bytes: config.max_text_bytes,
            guest_rate: config.guest_rate.0,
            ip_rate: config.ip_rate.0,
            admin_token_hash: config.admin_token.as_deref().map(crate::secrets::hash),
            demo_site: config.demo_site_enabled(),
            node,
        };
        let chat = Chat::new(store, bus, presence, limiter, keys, settings);
        if chat.settings.demo_site {
            match chat
                .ensure_demo_site()
                .await
                .context("creating the demo site")?
            {
                Some(secret) => {
                    tracing::info!(site = "demo", secret = %secret, "created the demo site (its admin secret is shown only now)")
                }
                None => tracing::debug!("the demo site exists"),
            }
        }
        let chat = web::Data::new(chat);
        chat.clone().into_inner().start_writer();
        Ok(App { chat, config })
    }

    /// The bus this node publishes on (in embedded mode, the in-process bus
    /// an edge in the same process subscribes to).
    pub fn bus(&self) -> Arc<dyn Bus> {
        self.chat.bus.clone()
    }

    /// The node's use cases (for tools and tests in the same process).
    pub fn chat(&self) -> web::Data<Chat> {
        self.chat.clone()
    }

    /// Serves on `listener` until `shutdown` resolves, then stops accepting
    /// and gives in-flight requests up to --drain-timeout to finish.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let chat = self.chat.clone();
        let local = listener.local_addr().ok();
        let tasks = SideTasks::start(&chat);
        let server = serve(self.chat.clone(), listener, &self.config)?;
        let handle = server.handle();
        let drain_delay = self.config.drain_delay;
        let draining = chat.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!(delay = ?drain_delay, "stopping: not ready, still serving");
            draining.start_draining();
            tokio::time::sleep(drain_delay).await;
            tracing::info!("stopping: no new connections, draining in-flight requests");
            handle.stop(true).await;
        });
        tracing::info!(addr = ?local, node = %chat.settings.node, "chat-api listening");
        let res = server.await;
        tasks.stop();
        tracing::info!("chat-api stopped");
        res.context("serving")
    }
}

/// The store the config names: MySQL, or the embedded SQLite file.
async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &config.mysql_url {
        Some(url) => connect_mysql(url, config.store_timeout).await?,
        None => {
            let path = config.data_dir.join("chatty.sqlite3");
            SqliteStore::open(&path).with_context(|| format!("opening {}", path.display()))?
        }
    })
}

/// The guest-token keys: those of the config, else the embedded one.
fn token_keys(config: &Config) -> anyhow::Result<TokenKeys> {
    let keys = if config.token_key.is_empty() {
        vec![embedded_token_key(&config.data_dir)?.into_bytes()]
    } else {
        config
            .token_key
            .iter()
            .map(|k| k.as_bytes().to_vec())
            .collect()
    };
    Ok(TokenKeys::new(keys)?)
}

/// The bus, presence and rate limits: on Redis when the config names one,
/// else in this process.
fn side_backends(config: &Config) -> anyhow::Result<SideBackends> {
    let Some(url) = &config.redis_url else {
        return Ok(SideBackends {
            bus: Arc::new(InProcessBus::default()),
            presence: Arc::new(crate::presence::InProcessPresence::new(
                crate::presence::DEFAULT_MAX_MEMBERS,
            )),
            limiter: Arc::new(crate::limits::InProcessLimiter::new(
                crate::limits::DEFAULT_MAX_KEYS,
            )),
        });
    };
    let bus = RedisBus::connect(RedisBusConfig {
        url: url.clone(),
        prefix: config.redis_prefix.clone(),
    })
    .context("connecting the Redis bus")?;
    let presence = crate::presence::RedisPresence::connect(url, &config.redis_prefix)
        .context("connecting Redis presence")?;
    let limiter = crate::limits::RedisLimiter::connect(url, &config.redis_prefix)
        .context("connecting Redis rate limits")?;
    Ok(SideBackends {
        bus,
        presence,
        limiter,
    })
}

/// The node's work beside the HTTP server, stopped when the server has
/// stopped.
struct SideTasks(Vec<JoinHandle<()>>);

impl SideTasks {
    /// The bus follower, and the periodic heartbeat, presence sweep and
    /// backend check.
    fn start(chat: &web::Data<Chat>) -> SideTasks {
        let follower = tokio::spawn({
            let chat = chat.clone();
            async move { chat.follow_bus().await }
        });
        SideTasks(vec![
            follower,
            every("heartbeat", HEARTBEAT_EVERY, chat, |c| async move {
                c.publish_heartbeat().await
            }),
            every("presence sweep", SWEEP_EVERY, chat, |c| async move {
                c.sweep_presence().await
            }),
            every("backend check", CHECK_EVERY, chat, |c| async move {
                c.ready().await;
            }),
        ])
    }

    fn stop(self) {
        for task in self.0 {
            task.abort();
        }
    }
}

/// Runs `work` every `period` (the first time at once; a late round delays
/// the next ones rather than bunching them), until the task is aborted.
fn every<F, Fut>(
    name: &'static str,
    period: Duration,
    chat: &web::Data<Chat>,
    work: F,
) -> JoinHandle<()>
where
    F: Fn(web::Data<Chat>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let chat = chat.clone();
    tokio::spawn(async move {
        tracing::debug!(task = name, ?period, "periodic task started");
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            work(chat.clone()).await;
        }
    })
}

/// Builds the HTTP server on `listener` (a plain function, so that the
/// builder, which is not `Send`, never lives in the `run` future).
fn serve(
    data: web::Data<Chat>,
    listener: TcpListener,
    config: &Config,
) -> anyhow::Result<actix_web::dev::Server> {
    let drain_secs =
        config.drain_timeout.as_secs() + u64::from(config.drain_timeout.subsec_nanos() > 0);
    let mut server = HttpServer::new(move || {
        actix_web::App::new()
            .app_data(data.clone())
            .wrap_fn(|req, srv| {
                let start = Instant::now();
                let method = req.method().clone();
                let fut = srv.call(req);
                async move {
                    let mut res: ServiceResponse = fut.await?;
                    let draining = res
                        .request()
                        .app_data::<web::Data<Chat>>()
                        .is_some_and(|c| c.is_draining());
                    if draining {
                        res.response_mut()
                            .head_mut()
                            .set_connection_type(actix_web::http::ConnectionType::Close);
                    }
                    let route = route_label(res.request().match_pattern().as_deref(), &method);
                    let class = status_class(res.status().as_u16());
                    METRICS.requests.with_label_values(&[route, class]).inc();
                    METRICS
                        .request_duration
                        .with_label_values(&[route])
                        .observe(start.elapsed().as_secs_f64());
                    Ok(res)
                }
            })
            .configure(crate::routes::configure)
            .default_service(web::to(crate::routes::not_found))
    })
    .shutdown_timeout(drain_secs)
    .disable_signals();
    if let Some(w) = config.workers {
        server = server.workers(w);
    }
    Ok(server.listen(listener).context("listening")?.run())
}
