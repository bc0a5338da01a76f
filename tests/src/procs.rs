//! The real binaries (chat-api, edge-proxy, chatty) started as child
//! processes on free ports, killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, http, wait_for};

/// Path of a workspace binary built by `cargo build --workspace --bins`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/integration-<hash>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` (make test does)",
        path.display()
    );
    path
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        let quiet = std::env::var_os("CHATTY_TEST_LOGS").is_none();
        if quiet {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child: Some(child),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends a signal by name (`KILL`, `TERM`, `STOP`, `CONT`, `QUIT`).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.name);
    }

    /// Waits for the process to exit, up to `limit`; returns its exit code.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = std::time::Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return status.code().or(Some(-1));
                }
            } else {
                return None;
            }
            assert!(
                start.elapsed() < limit,
                "{} did not exit within {limit:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// True once the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_ref() {
            // A stopped process must be continued to die promptly.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .status();
        }
        self.kill();
    }
}

/// Waits until `GET url` answers 200.
pub async fn wait_healthy(url: &str, limit: Duration) {
    let client = http();
    wait_for(limit, url, || {
        let client = client.clone();
        async move {
            match client.get(url).send().await {
                Ok(r) if r.status().is_success() => Some(()),
                _ => None,
            }
        }
    })
    .await
}

/// How many times a server that exits before it is ready is started again
/// on fresh ports: a port chosen free can be taken (by another test's
/// outgoing connection) before the server binds it.
const START_ATTEMPTS: usize = 3;

/// Waits until `ready` holds, for up to 20 s; false when `proc` exits
/// first (its ports were likely taken).
async fn up_or_exited<F, Fut>(proc: &mut Proc, what: &str, mut ready: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if ready().await {
            return true;
        }
        if proc.exited() {
            return false;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what} was not ready within 20 s (CHATTY_TEST_LOGS=1 shows its output)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `GET url` answers 200 now.
async fn answers_ok(url: &str) -> bool {
    http()
        .get(url)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Backends of a chat-api node.
#[derive(Clone, Debug, Default)]
pub struct ApiOpts {
    pub mysql_url: Option<String>,
    pub redis_url: Option<String>,
    pub redis_prefix: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub extra: Vec<String>,
}

/// The admin token every test node is started with.
pub const ADMIN_TOKEN: &str = "test-operator-token";
/// The token key every test node is started with (all nodes of one test
/// share it, as a cluster does).
pub const TOKEN_KEY: &str = "test-token-key-0123456789abcdef0123456789";

/// A running chat-api node.
pub struct ApiNode {
    pub proc: Proc,
    pub port: u16,
    pub base: String,
    opts: ApiOpts,
}

impl ApiNode {
    pub async fn start(opts: ApiOpts) -> ApiNode {
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let mut proc = Self::spawn(port, &opts);
            let base = format!("http://127.0.0.1:{port}");
            let readyz = format!("{base}/readyz");
            if up_or_exited(&mut proc, "chat-api", || answers_ok(&readyz)).await {
                return ApiNode {
                    proc,
                    port,
                    base,
                    opts,
                };
            }
        }
        panic!("chat-api exited before it was ready, {START_ATTEMPTS} times (CHATTY_TEST_LOGS=1 shows why)");
    }

    fn spawn(port: u16, opts: &ApiOpts) -> Proc {
        let mut cmd = Command::new(bin("chat-api"));
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--admin-token")
            .arg(ADMIN_TOKEN)
            .arg("--token-key")
            .arg(TOKEN_KEY)
            .arg("--node-name")
            .arg(format!("node-{port}"));
        if let Some(url) = &opts.mysql_url {
            cmd.arg("--mysql-url").arg(url);
        }
        if let Some(url) = &opts.redis_url {
            cmd.arg("--redis-url").arg(url);
        }
        if let Some(prefix) = &opts.redis_prefix {
            cmd.arg("--redis-prefix").arg(prefix);
        }
        if let Some(dir) = &opts.data_dir {
            cmd.arg("--data-dir").arg(dir);
        }
        cmd.args(&opts.extra);
        Proc::spawn("chat-api", cmd)
    }

    /// Starts the same node again on the same port (after a kill).
    pub async fn restart(&mut self) {
        self.proc.kill();
        self.proc = Self::spawn(self.port, &self.opts);
        wait_healthy(&format!("{}/readyz", self.base), Duration::from_secs(20)).await;
    }
}

/// Settings of an edge.
#[derive(Clone, Debug, Default)]
pub struct EdgeOpts {
    /// The proxy port; a free one when `None`.
    pub port: Option<u16>,
    pub upstreams: Vec<String>,
    pub redis_url: Option<String>,
    pub redis_prefix: Option<String>,
    pub extra: Vec<String>,
}

/// A running edge-proxy.
pub struct Edge {
    pub proc: Proc,
    pub port: u16,
    pub metrics_port: u16,
    pub base: String,
    pub metrics: String,
}

impl Edge {
    pub async fn start(opts: EdgeOpts) -> Edge {
        for _ in 0..START_ATTEMPTS {
            let mut edge = Self::spawn(opts.clone());
            if edge.ready_unless_exited().await {
                return edge;
            }
        }
        panic!("edge-proxy exited before it was ready, {START_ATTEMPTS} times (CHATTY_TEST_LOGS=1 shows why)");
    }

    /// Waits until the edge is ready on its operator port and its proxy
    /// port accepts connections (pingora binds them in separate services).
    pub async fn wait_ready(&mut self) {
        assert!(
            self.ready_unless_exited().await,
            "edge-proxy exited before it was ready (CHATTY_TEST_LOGS=1 shows why)"
        );
    }

    async fn ready_unless_exited(&mut self) -> bool {
        let readyz = format!("{}/readyz", self.metrics);
        let addr = format!("127.0.0.1:{}", self.port);
        up_or_exited(&mut self.proc, "edge-proxy", || {
            let (readyz, addr) = (&readyz, &addr);
            async move {
                answers_ok(readyz).await && tokio::net::TcpStream::connect(addr).await.is_ok()
            }
        })
        .await
    }

    /// Starts the edge without waiting for it (an edge started with
    /// `--upgrade` waits for its predecessor's listeners).
    pub fn spawn(opts: EdgeOpts) -> Edge {
        let port = opts.port.unwrap_or_else(free_port);
        let metrics_port = free_port();
        let mut cmd = Command::new(bin("edge-proxy"));
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .arg("--threads")
            .arg("2");
        for u in &opts.upstreams {
            cmd.arg("--upstream").arg(u);
        }
        if let Some(url) = &opts.redis_url {
            cmd.arg("--redis-url").arg(url);
        }
        if let Some(prefix) = &opts.redis_prefix {
            cmd.arg("--redis-prefix").arg(prefix);
        }
        cmd.args(&opts.extra);
        let proc = Proc::spawn("edge-proxy", cmd);
        let base = format!("http://127.0.0.1:{port}");
        let metrics = format!("http://127.0.0.1:{metrics_port}");
        Edge {
            proc,
            port,
            metrics_port,
            base,
            metrics,
        }
    }

    /// The value of one sample of the edge's metrics, e.g.
    /// `chatty_edge_requests_total{outcome="short_circuit"}`.
    pub async fn metric(&self, sample: &str) -> f64 {
        metric(&format!("{}/metrics", self.metrics), sample).await
    }
}

/// One sample of a Prometheus text page, written as on the page
/// (`name{label="value"}`); 0 when absent.
pub async fn metric(url: &str, sample: &str) -> f64 {
    let page = http()
        .get(url)
        .send()
        .await
        .expect("scrape metrics")
        .text()
        .await
        .expect("metrics body");
    chatty::metrics::sample_value(&page, sample).unwrap_or(0.0)
}

/// `chatty up`: the edge and one API node in one process, embedded store.
pub struct ChattyUp {
    pub proc: Proc,
    pub port: u16,
    pub base: String,
    pub data_dir: tempfile::TempDir,
}

impl ChattyUp {
    pub async fn start() -> ChattyUp {
        let data_dir = tempfile::tempdir().expect("data dir");
        let port = free_port();
        let mut cmd = Command::new(bin("chatty"));
        cmd.arg("up")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir.path());
        let proc = Proc::spawn("chatty up", cmd);
        let base = format!("http://127.0.0.1:{port}");
        wait_healthy(&format!("{base}/readyz"), Duration::from_secs(30)).await;
        ChattyUp {
            proc,
            port,
            base,
            data_dir,
        }
    }

    /// Runs a `chatty` subcommand against this stack's data dir; returns its
    /// standard output.
    pub fn chatty(&self, args: &[&str]) -> String {
        let out = Command::new(bin("chatty"))
            .args(args)
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .output()
            .expect("run chatty");
        assert!(
            out.status.success(),
            "chatty {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }
}
