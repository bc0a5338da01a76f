//! Fault tests: a real cluster (two chat-api nodes on MariaDB, a private
//! Redis, one edge) under `chatty load --check`, with one fault injected in
//! the middle of each run — only into servers and links of the test's own.
//! Each prints a figures line (`FAULT {...}`): requests failed, acknowledged
//! messages lost, duplicates, the longest delivery (bounding any stale-304
//! window) and the time to recover.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use chatty_tests::chat::{client, create_site, Guest, Reader};
use chatty_tests::fault::{FaultProxy, Mode};
use chatty_tests::procs::{bin, ApiNode, ApiOpts, Edge, EdgeOpts, Proc};
use chatty_tests::services::{FreshDb, PrivateRedis};
use chatty_tests::stack::edge_opts;
use chatty_tests::{unique, wait_for};
use serde_json::Value;

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
    fn load(&self, seed: u64) -> (Proc, PathBuf) {
        let report = self.dir.path().join(format!("load-{seed}.json"));
        let mut cmd = Command::new(bin("chatty"));
        cmd.args(["load", "--site", "acme", "--guests", "30", "--rooms", "3"])
            .args([
                "--send-rate",
                "8",
                "--ramp",
                "2s",
                "--check",
                "--no-progress",
            ])
            .arg("--target")
            .arg(&self.edge.base)
            .arg("--duration")
            .arg(format!("{}s", RUN.as_secs()))
            .arg("--poll-interval")
            .arg(format!("{}s", POLL.as_secs()))
            .arg("--seed")
            .arg(seed.to_string())
            .arg("--json")
            .arg(&report);
        (Proc::spawn("chatty load", cmd), report)
    }
}

/// What one fault run measured.
#[derive(Debug)]
struct Figures {
    exit: Option<i32>,
    report: Value,
    recovered_in: Duration,
}

impl Figures {
    fn failed_requests(&self) -> u64 {
        self.report["errors"]
            .as_object()
            .map(|m| m.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0)
    }

    fn check(&self, field: &str) -> u64 {
        self.report["check"][field].as_u64().expect("check field")
    }

    fn delivery_max_ms(&self) -> f64 {
        self.report["delivery_latency_ms"]["max"]
            .as_f64()
            .unwrap_or(0.0)
    }

    /// Prints the figures line and asserts what every fault test must hold.
    fn assert_nothing_lost(&self, name: &str) {
        println!(
            "FAULT {{\"fault\":\"{name}\",\"failed_requests\":{},\"sends_acknowledged\":{},\"lost_acknowledged\":{},\"duplicated\":{},\"missing\":{},\"out_of_order\":{},\"delivery_max_ms\":{:.0},\"recovered_in_ms\":{}}}",
            self.failed_requests(),
            self.report["sends_acknowledged"],
            self.check("lost_acknowledged"),
            self.check("duplicated"),
            self.check("missing"),
            self.check("out_of_order"),
            self.delivery_max_ms(),
            self.recovered_in.as_millis()
        );
        assert!(self.report["check"]["enabled"].as_bool().unwrap_or(false));
        assert!(
            self.report["sends_acknowledged"].as_u64().unwrap_or(0) > 20,
            "too few sends: {}",
            self.report
        );
        assert_eq!(
            self.check("lost_acknowledged"),
            0,
            "{name}: acknowledged messages lost"
        );
        assert_eq!(self.check("duplicated"), 0, "{name}: duplicates");
        assert_eq!(self.check("missing"), 0, "{name}: a reader skipped events");
        assert_eq!(self.check("out_of_order"), 0, "{name}: events out of order");
        assert_eq!(
            self.exit,
            Some(0),
            "{name}: the checker failed: {}",
            self.report
        );
    }

    /// The brief's bound on a stale 304: a message reaches every reader
    /// within a poll interval plus the edge's max-age (plus a second of
    /// slack for scheduling on a loaded machine).
    fn assert_staleness_bounded(&self, name: &str) {
        let bound = (POLL + MAX_AGE + Duration::from_secs(1)).as_millis() as f64;
        assert!(
            self.delivery_max_ms() <= bound,
            "{name}: a message took {:.0} ms to reach a reader (bound {bound} ms)",
            self.delivery_max_ms()
        );
    }
}

/// A load running through the edge, with a probe guest of its own.
struct Running {
    load: Proc,
    report: PathBuf,
    probe: Guest,
}

/// Starts the load and waits until the fault is due.
async fn start(c: &Cluster, seed: u64) -> Running {
    let probe = Guest::join(&c.edge.base, "acme", "probe", "probe").await;
    let (load, report) = c.load(seed);
    tokio::time::sleep(FAULT_AT).await;
    Running {
        load,
        report,
        probe,
    }
}

/// Called once the fault is over: measures the time until a send and a
/// poll through the edge succeed again, then waits for the load's report.
async fn finish(c: &Cluster, mut r: Running) -> Figures {
    let restored = Instant::now();
    let reader_client = client(&c.edge.base, "acme");
    let mut n = 0u32;
    let probe = &r.probe;
    wait_for(Duration::from_secs(30), "the cluster to recover", || {
        n += 1;
        let id = format!("probe-{n}");
        let reader_client = &reader_client;
        async move {
            let sent = probe
                .client
                .send(&probe.room, &probe.joined.token, "probe", &id)
                .await
                .ok()?;
            let mut reader = Reader::new();
            reader.poll(reader_client, &probe.room).await.ok()?;
            reader
                .events
                .iter()
                .any(|e| e.seq == sent.seq)
                .then_some(())
        }
    })
    .await;
    let recovered_in = restored.elapsed();
    let exit = r.load.wait_exit(RUN + Duration::from_secs(60)).await;
    let text = std::fs::read_to_string(&r.report).expect("the load's JSON report");
    Figures {
        exit,
        report: serde_json::from_str(&text).expect("report JSON"),
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
        f.report["errors"]
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
        f.report["errors"]
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
