//! Attacks on an edge, run in the background while a test measures it: a
//! paced flood of polls for invented rooms, and slowloris connections that
//! never finish their request header.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// A poll an overloaded API node shed with 503 and Retry-After, as
/// documented.
pub const SHED: &str = "shed: 503 with Retry-After";
/// A poll the client gave up on (an overloaded machine).
pub const CLIENT_TIMEOUT: &str = "client timeout";

/// Polls of `acme` rooms nobody made (`inv-{task}-{n}`, each asked once with
/// an ETag), from `tasks` tasks paced together to a target rate.
pub struct InventedRooms {
    sent: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl InventedRooms {
    pub fn start(base: &str, tasks: usize, per_sec: f64) -> InventedRooms {
        let sent = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(tasks)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let start = Instant::now();
        let interval = Duration::from_secs_f64(tasks as f64 / per_sec);
        let tasks = (0..tasks)
            .map(|t| {
                let (client, sent, failures, stop) =
                    (client.clone(), sent.clone(), failures.clone(), stop.clone());
                let base = base.to_owned();
                tokio::spawn(async move {
                    let mut i: u64 = 0;
                    while !stop.load(Ordering::Relaxed) {
                        // Paced to the target rate; as fast as possible below it.
                        let due = start + interval.mul_f64(i as f64);
                        tokio::time::sleep_until(due.into()).await;
                        let r = client
                            .get(format!(
                                "{base}/v1/sites/acme/rooms/inv-{t}-{i}/messages?after=0"
                            ))
                            .header("if-none-match", "\"r0.0\"")
                            .send()
                            .await;
                        if let Some(f) = poll_failure(r).await {
                            failures.lock().expect("failures").push(f);
                        }
                        sent.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                })
            })
            .collect();
        InventedRooms {
            sent,
            failures,
            stop,
            tasks,
        }
    }

    /// Polls sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops the flood; returns how many polls it sent and how each one that
    /// failed went wrong.
    pub async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("poller");
        }
        let failures = self.failures.lock().expect("failures").clone();
        (self.sent.load(Ordering::Relaxed), failures)
    }
}

/// How one poll of an invented room went wrong, if it did.
pub async fn poll_failure(r: Result<reqwest::Response, reqwest::Error>) -> Option<String> {
    match r {
        Ok(r) if r.status() == 200 || r.status() == 304 => None,
        // Load shed by an overloaded API node (its store calls time out),
        // as documented; debug builds on two shared cores reach it under
        // this flood. A 503 of the edge's own is a failure.
        Ok(r) if r.status() == 503 && r.headers().contains_key("retry-after") => {
            let body = r.text().await.unwrap_or_default();
            Some(if body.contains("service unavailable, retry later") {
                SHED.into()
            } else {
                format!("status 503: {body}")
            })
        }
        Ok(r) => Some(format!("status {}", r.status().as_u16())),
        Err(e) if e.is_timeout() => Some(CLIENT_TIMEOUT.into()),
        Err(e) => Some(format!("error: {e}")),
    }
}

/// What one slow connection saw.
#[derive(Debug)]
pub enum Slow {
    /// Closed by the edge after this long; whether it answered 408 first.
    Closed(Duration, bool),
    NotClosed,
    ConnectFailed(String),
}

/// `n` attackers, each holding one connection that sends a request header
/// one byte a second and opening another as soon as the edge drops it, so
/// about `n` connections are held for as long as the attack lasts.
pub struct Slowloris {
    opened: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    attackers: Vec<JoinHandle<Vec<Slow>>>,
}

impl Slowloris {
    pub fn start(addr: &str, n: usize) -> Slowloris {
        let opened = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let attackers = (0..n)
            .map(|_| {
                let (addr, opened, stop) = (addr.to_owned(), opened.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        seen.push(slow_connection(&addr, &opened).await);
                    }
                    seen
                })
            })
            .collect();
        Slowloris {
            opened,
            stop,
            attackers,
        }
    }

    /// Connections opened so far.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Stops the attack (each attacker ends with its current connection);
    /// returns what every connection saw.
    pub async fn stop(self) -> Vec<Slow> {
        self.stop.store(true, Ordering::Relaxed);
        let mut seen = Vec::new();
        for a in self.attackers {
            seen.extend(a.await.expect("attacker"));
        }
        seen
    }
}

/// Opens a connection and sends a request header one byte a second, never
/// finishing it, until the edge closes the connection (or 10 s pass).
async fn slow_connection(addr: &str, opened: &AtomicU64) -> Slow {
    const HEAD: &[u8] =
        b"GET /v1/sites/acme/rooms/hall/messages?after=0 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: y\r\n";
    let stream = match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Slow::ConnectFailed(e.to_string()),
        Err(_) => return Slow::ConnectFailed("connect timed out".into()),
    };
    opened.fetch_add(1, Ordering::Relaxed);
    let began = Instant::now();
    let (mut r, mut w) = stream.into_split();
    let writer = async move {
        for i in 0.. {
            if w.write_all(&[HEAD[i % HEAD.len()]]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        std::future::pending::<()>().await;
    };
    let reader = async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::select! {
            got = reader => got,
            _ = writer => unreachable!(),
        }
    })
    .await;
    match closed {
        Ok(got) => Slow::Closed(began.elapsed(), got.starts_with(b"HTTP/1.1 408")),
        Err(_) => Slow::NotClosed,
    }
}
