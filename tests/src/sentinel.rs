//! Redis behind Sentinel for one test: a primary, one replica and three
//! Sentinels of the test's own on free ports (`redis-server --sentinel`), so
//! that a test may kill the primary and watch the Sentinels promote the
//! replica without disturbing anyone else.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::procs::Proc;
use crate::services::redis_ping;
use crate::{free_port, wait_for};

/// The name the Sentinels know the primary by.
pub const SERVICE: &str = "chatty";

const INSTALL: &str = "install it with `apt-get install -y redis-server` \
     (or run `make test`, which installs it); its `redis-server --sentinel` runs the Sentinels";

/// How long a primary may be silent before the Sentinels call it down.
pub const DOWN_AFTER: Duration = Duration::from_millis(1000);

/// A primary and a replica watched by three Sentinels.
pub struct SentinelRedis {
    /// The data servers by port; `None` once killed.
    servers: Vec<(u16, Option<Proc>)>,
    sentinels: Vec<(u16, Proc)>,
    _dir: tempfile::TempDir,
}

/// Fails with how to install Redis when `redis-server` cannot run.
pub fn require_redis_server() {
    let ok = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "redis-server is missing: {INSTALL}");
}

/// A data server on `port` whose files (a replica's copy of its primary's
/// data during a full sync) go to `dir`.
fn data_server(port: u16, replica_of: Option<u16>, dir: &std::path::Path) -> Proc {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--port")
        .arg(port.to_string())
        .arg("--dir")
        .arg(dir);
    if let Some(primary) = replica_of {
        cmd.args(["--replicaof", "127.0.0.1"])
            .arg(primary.to_string());
    }
    Proc::spawn("redis-server", cmd)
}

impl SentinelRedis {
    /// Starts the servers and the Sentinels and waits until the Sentinels
    /// know the replica and each other (a failover is possible).
    pub async fn start() -> SentinelRedis {
        require_redis_server();
        let dir = tempfile::tempdir().expect("temp dir");
        let primary = free_port();
        let replica = free_port();
        let mut servers = vec![(primary, Some(data_server(primary, None, dir.path())))];
        wait_for(
            Duration::from_secs(10),
            "the primary redis-server",
            || async move { redis_ping(primary).await.ok() },
        )
        .await;
        servers.push((
            replica,
            Some(data_server(replica, Some(primary), dir.path())),
        ));
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let conf = dir.path().join(format!("sentinel-{i}.conf"));
            // The Sentinel rewrites its file as it learns: it must be its own.
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {SERVICE} 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds {SERVICE} {down}\n\
                     sentinel failover-timeout {SERVICE} 3000\n\
                     sentinel parallel-syncs {SERVICE} 1\n",
                    dir = dir.path().display(),
                    down = DOWN_AFTER.as_millis(),
                ),
            )
            .expect("sentinel conf");
            let mut cmd = Command::new("redis-server");
            cmd.arg(&conf).arg("--sentinel");
            sentinels.push((port, Proc::spawn("redis-server --sentinel", cmd)));
        }
        let s = SentinelRedis {
            servers,
            sentinels,
            _dir: dir,
        };
        s.wait_ready(replica).await;
        s
    }

    /// Waits until the replica is in sync and every Sentinel sees it and a
    /// quorum of the others.
    async fn wait_ready(&self, replica: u16) {
        wait_for(
            Duration::from_secs(30),
            "the replica to sync",
            || async move {
                command(replica, "INFO replication")
                    .await
                    .ok()
                    .filter(|info| info.contains("master_link_status:up"))
            },
        )
        .await;
        for (port, _) in &self.sentinels {
            let port = *port;
            wait_for(
                Duration::from_secs(30),
                "the Sentinels to know the replica and each other",
                || async move {
                    let quorum = command(port, &format!("SENTINEL CKQUORUM {SERVICE}"))
                        .await
                        .ok()?;
                    let replicas = command(port, &format!("SENTINEL REPLICAS {SERVICE}"))
                        .await
                        .ok()?;
                    (quorum.starts_with("+OK 3 usable") && replicas.contains(&replica.to_string()))
                        .then_some(())
                },
            )
            .await;
        }
    }

    /// `redis-sentinel://` with every Sentinel, as the API nodes and the
    /// edge take it.
    pub fn url(&self) -> String {
        let mut url = format!(
            "redis-sentinel://127.0.0.1:{}/0?sentinelServiceName={SERVICE}",
            self.sentinels[0].0
        );
        for (port, _) in &self.sentinels[1..] {
            url.push_str(&format!("&node=127.0.0.1:{port}"));
        }
        url
    }

    /// The primary's port as the first Sentinel that answers names it.
    pub async fn primary(&self) -> Option<u16> {
        for (port, _) in &self.sentinels {
            let reply = command(
                *port,
                &format!("SENTINEL get-master-addr-by-name {SERVICE}"),
            )
            .await
            .ok();
            if let Some(port) = reply.and_then(|r| last_number(&r)) {
                return Some(port);
            }
        }
        None
    }

    /// Kills the current primary with SIGKILL; returns its port.
    pub async fn kill_primary(&mut self) -> u16 {
        let port = self.primary().await.expect("a Sentinel names the primary");
        let server = self
            .servers
            .iter_mut()
            .find(|(p, _)| *p == port)
            .expect("the primary is one of ours");
        server.1.take().expect("the primary is running").kill();
        port
    }

    /// Asks the Sentinels for a graceful failover (`SENTINEL FAILOVER`, as
    /// for maintenance): the replica is promoted and the old primary, still
    /// running, becomes its replica. Returns the old primary's port.
    pub async fn failover(&self) -> u16 {
        let port = self.primary().await.expect("a Sentinel names the primary");
        let reply = command(self.sentinels[0].0, &format!("SENTINEL FAILOVER {SERVICE}"))
            .await
            .expect("the Sentinel answers");
        assert!(reply.starts_with("+OK"), "SENTINEL FAILOVER: {reply}");
        port
    }

    /// Waits until the Sentinels name a primary other than `old` and it
    /// answers as one; returns its port and how long that took.
    pub async fn wait_promoted(&self, old: u16, limit: Duration) -> (u16, Duration) {
        let start = Instant::now();
        let port = wait_for(limit, "the Sentinels to promote the replica", || async {
            let port = self.primary().await.filter(|p| *p != old)?;
            command(port, "ROLE")
                .await
                .ok()
                .filter(|r| r.contains("master"))
                .map(|_| port)
        })
        .await;
        (port, start.elapsed())
    }
}

/// The last decimal line of a RESP reply (the port of an address reply).
fn last_number(reply: &str) -> Option<u16> {
    reply.lines().rev().find_map(|l| l.trim().parse().ok())
}

/// Sends one inline command and returns the raw reply, read until the
/// server has been quiet for a moment (enough for the small replies asked
/// for here).
pub async fn command(port: u16, line: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| e.to_string())?;
    s.write_all(format!("{line}\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let first = Duration::from_secs(1);
    let more = Duration::from_millis(50);
    loop {
        let wait = if out.is_empty() { first } else { more };
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return Err(e.to_string()),
        }
        if out.len() > 1 << 20 {
            break;
        }
    }
    if out.is_empty() {
        return Err("no answer".into());
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}
