//! A Redis Cluster for one test: three primaries (no replicas) of the
//! test's own on free ports, their slots assigned by
//! `redis-cli --cluster create`.

use std::process::Command;
use std::time::Duration;

use crate::procs::Proc;
use crate::sentinel::{command, require_redis_server};
use crate::services::redis_ping;
use crate::{free_port, wait_for};

/// Three primaries sharing the 16384 slots.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    _nodes: Vec<Proc>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster and waits until every node
    /// says `cluster_state:ok`.
    pub async fn start() -> RedisCluster {
        require_redis_server();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut ports = Vec::new();
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            // The cluster bus port defaults to port + 10000, which may be
            // taken or beyond 65535: pick it too.
            let bus = free_port();
            let mut cmd = Command::new("redis-server");
            cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .arg("--port")
                .arg(port.to_string())
                .arg("--cluster-port")
                .arg(bus.to_string())
                .arg("--cluster-config-file")
                .arg(dir.path().join(format!("nodes-{port}.conf")))
                .arg("--dir")
                .arg(dir.path());
            nodes.push(Proc::spawn("redis-server --cluster-enabled", cmd));
            ports.push(port);
        }
        for &port in &ports {
            wait_for(Duration::from_secs(10), "a cluster node", || async move {
                redis_ping(port).await.ok()
            })
            .await;
        }
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .arg("--cluster-yes")
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "redis-cli is missing ({e}): install it with `apt-get install -y redis-server` \
                     (or run `make test`, which installs it)"
                )
            });
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for &port in &ports {
            wait_for(Duration::from_secs(30), "cluster_state:ok", || async move {
                command(port, "CLUSTER INFO")
                    .await
                    .ok()
                    .filter(|info| info.contains("cluster_state:ok"))
            })
            .await;
        }
        RedisCluster {
            ports,
            _nodes: nodes,
            _dir: dir,
        }
    }

    /// `redis-cluster://` with every node.
    pub fn url(&self) -> String {
        let mut url = format!("redis-cluster://127.0.0.1:{}", self.ports[0]);
        for (i, port) in self.ports[1..].iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&format!("node=127.0.0.1:{port}"));
        }
        url
    }

    /// The sum over every node of what `line` answers as a number list
    /// (e.g. `PUBSUB SHARDNUMSUB channel`: its last number).
    pub async fn sum_last_number(&self, line: &str) -> u64 {
        let mut sum = 0;
        for &port in &self.ports {
            let reply = command(port, line).await.expect("a cluster node answers");
            sum += reply
                .lines()
                .rev()
                .find_map(|l| l.trim().strip_prefix(':')?.parse::<u64>().ok())
                .unwrap_or(0);
        }
        sum
    }

    /// Every key matching `pattern`, from every node, with the node's port.
    pub async fn keys(&self, pattern: &str) -> Vec<(u16, String)> {
        let mut out = Vec::new();
        for &port in &self.ports {
            let reply = command(port, &format!("KEYS {pattern}"))
                .await
                .expect("a cluster node answers");
            // RESP: `*n`, then `$len` and the key, for each key.
            let mut lines = reply.lines().skip(1);
            while let (Some(_), Some(key)) = (lines.next(), lines.next()) {
                out.push((port, key.to_owned()));
            }
        }
        out
    }
}
