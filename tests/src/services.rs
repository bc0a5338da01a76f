//! MariaDB and Redis for the suite: the shared servers (each test with its
//! own database and key prefix) and private redis-server instances that a
//! test may kill and restart without disturbing anyone else.

use std::process::Command;
use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::procs::Proc;
use crate::{free_port, unique, wait_for};

pub const MYSQL_ROOT: &str = "mysql://root@127.0.0.1:3306";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

const START_MARIADB: &str =
    "start it with `start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd` \
     (or run `make test`, which installs and starts it)";
const START_REDIS: &str =
    "start it with `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 \
     --save \"\"` (or run `make test`, which installs and starts it)";

/// A fresh database on the shared MariaDB, dropped when the value is dropped.
pub struct FreshDb {
    pub name: String,
    pub url: String,
}

impl FreshDb {
    pub async fn create() -> FreshDb {
        let name = unique("chatty_t_");
        let pool = mysql_async::Pool::new(MYSQL_ROOT);
        let mut conn = tokio::time::timeout(Duration::from_secs(5), pool.get_conn())
            .await
            .unwrap_or_else(|_| {
                panic!("MariaDB at 127.0.0.1:3306 does not answer: {START_MARIADB}")
            })
            .unwrap_or_else(|e| {
                panic!("MariaDB at 127.0.0.1:3306 is unreachable ({e}): {START_MARIADB}")
            });
        conn.query_drop(format!("CREATE DATABASE `{name}`"))
            .await
            .expect("create test database");
        drop(conn);
        let _ = pool.disconnect().await;
        FreshDb {
            url: format!("{MYSQL_ROOT}/{name}"),
            name,
        }
    }

    /// The database URL as seen through another address (a fault proxy).
    pub fn url_via(&self, port: u16) -> String {
        format!("mysql://root@127.0.0.1:{port}/{}", self.name)
    }
}

impl Drop for FreshDb {
    fn drop(&mut self) {
        let _ = Command::new("mariadb")
            .args(["--protocol=tcp", "-h127.0.0.1", "-uroot", "-e"])
            .arg(format!("DROP DATABASE IF EXISTS `{}`", self.name))
            .status();
    }
}

/// Fails with how to start Redis when the shared one does not answer; returns
/// a fresh key prefix.
pub async fn redis_prefix() -> String {
    redis_ping(6379)
        .await
        .unwrap_or_else(|e| panic!("Redis at 127.0.0.1:6379 is unreachable ({e}): {START_REDIS}"));
    unique("t").chars().take(13).collect::<String>() + ":"
}

/// PING over a raw socket.
pub async fn redis_ping(port: u16) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| e.to_string())?;
    s.write_all(b"PING\r\n").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf))
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| e.to_string())?;
    if buf[..n].starts_with(b"+PONG") {
        Ok(())
    } else {
        Err("unexpected answer".into())
    }
}

/// A redis-server of the test's own, on a free port.
pub struct PrivateRedis {
    pub port: u16,
    proc: Option<Proc>,
}

impl PrivateRedis {
    pub async fn start() -> PrivateRedis {
        let mut r = PrivateRedis {
            port: free_port(),
            proc: None,
        };
        r.restart().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL): everything it held is gone.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Starts the server (again) on the same port and waits for PONG.
    pub async fn restart(&mut self) {
        self.kill();
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--port",
        ])
        .arg(self.port.to_string());
        self.proc = Some(Proc::spawn("redis-server", cmd));
        let port = self.port;
        wait_for(
            Duration::from_secs(10),
            "private redis-server",
            || async move { redis_ping(port).await.ok() },
        )
        .await;
    }
}
