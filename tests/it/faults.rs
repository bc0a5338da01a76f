//! Fault tests: a real cluster (two chat-api nodes on MariaDB, a private
//! Redis, one edge) under `chatty load --check`, with one fault injected in
//! the middle of each run — only into servers and links of the test's own.
//! Each prints a figures line (`FAULT {...}`): requests failed, acknowledged
//! messages lost, duplicates, the longest delivery (bounding any stale-304
//! window) and the time to recover.

use std::time::{Duration, Instant};

use chatty_tests::chat::{client, create_site, Guest};
use chatty_tests::fault::{FaultProxy, Mode};
use chatty_tests::load::{Load, LoadReport};
use chatty_tests::procs::{ApiNode, ApiOpts, Edge, EdgeOpts};
use chatty_tests::services::{FreshDb, PrivateRedis};
use chatty_tests::stack::edge_opts;
use chatty_tests::{unique, wait_for};

/// The edge's max-age in these tests.
const MAX_AGE: Duration = Duration::from_secs(2);
/// The load's poll interval (the widget's).
const POLL: Duration = Duration::from_secs(2);
/// How long each load runs; the fault comes after `FAULT_AT`.
const RUN: Duration = Duration::from_secs(16);
const FAULT_AT: Duration = Duration::from_secs(5);

struct Cluster {
    _db: FreshDb,
    redis: PrivateRedis,
    /// Each API node's own link to Redis (to lose one node's publishes).
    redis_links: Vec<FaultProxy>,
    /// The API nodes' link to MariaDB.
    mysql_link: FaultProxy,
    nodes: Vec<ApiNode>,
    edge: Edge,
    prefix: String,
    dir: tempfile::TempDir,
    /// Last, so that it is let go once everything above has stopped.
    _heavy: tokio::sync::MutexGuard<'static, ()>,
}

impl Cluster {
    async fn start() -> Cluster {
        let heavy = chatty_tests::heavy().await;
        let db = FreshDb::create().await;
        let redis = PrivateRedis::start().await;
        let prefix = unique("f").chars().take(10).collect::<String>() + ":";
        let mysql_link = FaultProxy::start(3306).await;
        let mut redis_links = Vec::new();
        let mut nodes = Vec::new();
        for _ in 0..2 {
            let link = FaultProxy::start(redis.port).await;
            nodes.push(
                ApiNode::start(ApiOpts {
                    mysql_url: Some(db.url_via(mysql_link.port)),
                    redis_url: Some(format!("redis://127.0.0.1:{}", link.port)),
                    redis_prefix: Some(prefix.clone()),
                    extra: [
                        "--guest-rate",
                        "off",
                        "--ip-rate",
                        "off",
                        "--drain-timeout",
                        "5s",
                    ]
                    .map(String::from)
                    .to_vec(),
                    ..ApiOpts::default()
                })
                .await,
            );
            redis_links.push(link);
        }
        create_site(&nodes[0].base, "acme").await;
        let dir = tempfile::tempdir().expect("temp dir");
        let edge = Edge::start(Self::edge_opts(&nodes, &redis, &prefix, None, &dir)).await;
        Cluster {
            _db: db,
            redis,
            redis_links,
            mysql_link,
            nodes,
            edge,
            prefix,
            dir,
            _heavy: heavy,
        }
    }

    /// Edge settings: both nodes, the private Redis, a pingora config with
    /// an upgrade socket (for the graceful restart).
    fn edge_opts(
        nodes: &[ApiNode],
        redis: &PrivateRedis,
        prefix: &str,
        port: Option<u16>,
        dir: &tempfile::TempDir,
    ) -> EdgeOpts {
        let conf = dir.path().join("pingora.yaml");
        std::fs::write(
            &conf,
            format!(
                "---\nversion: 1\nupgrade_sock: {}\npid_file: {}\n",
                dir.path().join("upgrade.sock").display(),
                dir.path().join("edge.pid").display()
            ),
        )
        .expect("pingora conf");
        let max_age = format!("{}ms", MAX_AGE.as_millis());
        let conf = conf.display().to_string();
        let extra = ["--max-age", &max_age, "-c", &conf];
        EdgeOpts {
            port,
            ..edge_opts(nodes, &redis.url(), prefix, &extra)
        }
    }

    /// Starts `chatty load --check` through the edge in the background.
    fn load(&self, seed: u64) -> Load {
        Load::start(&self.edge.base, self.dir.path(), seed, RUN, POLL)
    }
}

/// What one fault run measured: the load's report and the time the
/// cluster took to recover.
#[derive(Debug)]
struct Figures {
    load: LoadReport,
    recovered_in: Duration,
}

impl Figures {
    fn failed_requests(&self) -> u64 {
        self.load.failed_requests()
    }

    /// Prints the figures line and asserts what every fault test must hold.
    fn assert_nothing_lost(&self, name: &str) {
        let l = &self.load;
        println!(
            "FAULT {{\"fault\":\"{name}\",\"failed_requests\":{},\"sends_acknowledged\":{},\"lost_acknowledged\":{},\"duplicated\":{},\"missing\":{},\"out_of_order\":{},\"delivery_max_ms\":{:.0},\"recovered_in_ms\":{}}}",
            l.failed_requests(),
            l.sends_acknowledged(),
            l.check("lost_acknowledged"),
            l.check("duplicated"),
            l.check("missing"),
            l.check("out_of_order"),
            l.delivery_max_ms(),
            self.recovered_in.as_millis()
        );
        l.assert_nothing_lost(name);
    }

    /// The brief's bound on a stale 304: a message reaches every reader
    /// within a poll interval plus the edge's max-age (plus a second of
    /// slack for scheduling on a loaded machine).
    fn assert_staleness_bounded(&self, name: &str) {
        let bound = (POLL + MAX_AGE + Duration::from_secs(1)).as_millis() as f64;
        assert!(
            self.load.delivery_max_ms() <= bound,
            "{name}: a message took {:.0} ms to reach a reader (bound {bound} ms)",
            self.load.delivery_max_ms()
        );
    }
}

/// A load running through the edge, with a probe guest of its own.
struct Running {
    load: Load,
    probe: Guest,
}

/// Starts the load and waits until the fault is due.
async fn start(c: &Cluster, seed: u64) -> Running {
    let probe = Guest::join(&c.edge.base, "acme", "probe", "probe").await;
    let load = c.load(seed);
    tokio::time::sleep(FAULT_AT).await;
    Running { load, probe }
}

/// Called once the fault is over: measures the time until a send and a
/// poll through the edge succeed again, then waits for the load's report.
async fn finish(c: &Cluster, r: Running) -> Figures {
    let restored = Instant::now();
    let reader_client = client(&c.edge.base, "acme");
    let mut n = 0u32;
    let probe = &r.probe;
    wait_for(Duration::from_secs(30), "the cluster to recover", || {
        n += 1;
        let id = format!("probe-{n}");
        let reader_client = &reader_client;
        async move { probe.round_trip(reader_client, "probe", &id).await }
    })
    .await;
    let recovered_in = restored.elapsed();
    Figures {
        load: r.load.finish().await,
        recovered_in,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_node_sigkill() {
    let mut c = Cluster::start().await;
    let r = start(&c, 1).await;
    c.nodes[0].proc.kill();
    let f = finish(&c, r).await;
    f.assert_nothing_lost("api_node_sigkill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_node_sigterm_drains_without_a_failed_request() {
    let mut c = Cluster::start().await;
    let r = start(&c, 2).await;
    c.nodes[0].proc.signal("TERM");
    c.nodes[0].proc.wait_exit(Duration::from_secs(20)).await;
    let f = finish(&c, r).await;
    f.assert_nothing_lost("api_node_sigterm");
    assert_eq!(
        f.failed_requests(),
        0,
        "a drained node failed requests: {}",
        f.load.report["errors"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted() {
    let mut c = Cluster::start().await;
    let r = start(&c, 3).await;
    c.redis.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.redis.restart().await;
    let f = finish(&c, r).await;
    f.assert_nothing_lost("redis_restarted");
    f.assert_staleness_bounded("redis_restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_hung() {
    let mut c = Cluster::start().await;
    // The edge's own link to Redis goes through a proxy too.
    let edge_link = FaultProxy::start(c.redis.port).await;
    let mut opts = Cluster::edge_opts(&c.nodes, &c.redis, &c.prefix, None, &c.dir);
    opts.redis_url = Some(format!("redis://127.0.0.1:{}", edge_link.port));
    c.edge = Edge::start(opts).await;
    let r = start(&c, 4).await;
    for l in c.redis_links.iter().chain([&edge_link]) {
        l.set(Mode::Hang).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for l in c.redis_links.iter().chain([&edge_link]) {
        l.set(Mode::Pass).await;
    }
    let f = finish(&c, r).await;
    f.assert_nothing_lost("redis_hung");
    f.assert_staleness_bounded("redis_hung");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_stopped_and_restarted() {
    let c = Cluster::start().await;
    let r = start(&c, 5).await;
    c.mysql_link.set(Mode::Cut).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.mysql_link.set(Mode::Pass).await;
    let f = finish(&c, r).await;
    f.assert_nothing_lost("mariadb_stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_restarted_gracefully() {
    let mut c = Cluster::start().await;
    let r = start(&c, 6).await;
    let mut opts = Cluster::edge_opts(&c.nodes, &c.redis, &c.prefix, Some(c.edge.port), &c.dir);
    opts.extra.push("--upgrade".into());
    let mut new = Edge::spawn(opts);
    // The new edge waits on the upgrade socket; the old one hands over its
    // listeners on SIGQUIT and drains.
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.edge.proc.signal("QUIT");
    new.wait_ready().await;
    let mut old = std::mem::replace(&mut c.edge, new);
    old.proc.wait_exit(Duration::from_secs(30)).await;
    let f = finish(&c, r).await;
    f.assert_nothing_lost("edge_restarted_gracefully");
    assert_eq!(
        f.failed_requests(),
        0,
        "the upgrade failed requests: {}",
        f.load.report["errors"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_lost_between_one_node_and_redis() {
    let c = Cluster::start().await;
    let r = start(&c, 7).await;
    c.redis_links[0].set(Mode::Cut).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    c.redis_links[0].set(Mode::Pass).await;
    let f = finish(&c, r).await;
    f.assert_nothing_lost("publish_lost");
    f.assert_staleness_bounded("publish_lost");
}
