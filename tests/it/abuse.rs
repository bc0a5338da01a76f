//! Abuse: rate limits (the API's, seen through the edge) and the edge's
//! per-address connection cap, a flood of invented room names against the
//! edge's memory, 1,000 slowloris connections, oversized headers and bodies,
//! guest tokens used where they do not belong, and the secrets that guard the
//! site-admin and operator endpoints. Real processes on MariaDB and Redis.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatty_tests::chat::{create_site, Guest};
use chatty_tests::procs::{ApiNode, ApiOpts, Edge, EdgeOpts, ADMIN_TOKEN};
use chatty_tests::services::{redis_prefix, FreshDb, REDIS_URL};
use chatty_tests::{http, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An edge in front of API nodes on a fresh database and a fresh key prefix
/// of the shared Redis, with the site `acme` created.
struct Stack {
    _db: FreshDb,
    apis: Vec<ApiNode>,
    edge: Edge,
    /// The admin secret of `acme`.
    secret: String,
}

impl Stack {
    fn api(&self) -> &ApiNode {
        &self.apis[0]
    }

    fn edge_addr(&self) -> String {
        format!("127.0.0.1:{}", self.edge.port)
    }
}

async fn stack(nodes: usize, api_extra: &[&str], edge_extra: &[&str]) -> Stack {
    let db = FreshDb::create().await;
    let prefix = redis_prefix().await;
    let opts = ApiOpts {
        mysql_url: Some(db.url.clone()),
        redis_url: Some(REDIS_URL.into()),
        redis_prefix: Some(prefix.clone()),
        extra: api_extra.iter().map(|s| s.to_string()).collect(),
        ..ApiOpts::default()
    };
    let mut apis = Vec::new();
    for _ in 0..nodes {
        apis.push(ApiNode::start(opts.clone()).await);
    }
    let secret = create_site(&apis[0].base, "acme").await;
    let edge = Edge::start(EdgeOpts {
        upstreams: apis
            .iter()
            .map(|a| format!("127.0.0.1:{}", a.port))
            .collect(),
        redis_url: Some(REDIS_URL.into()),
        redis_prefix: Some(prefix),
        extra: edge_extra.iter().map(|s| s.to_string()).collect(),
        ..EdgeOpts::default()
    })
    .await;
    Stack {
        _db: db,
        apis,
        edge,
        secret,
    }
}

const RATES_OFF: &[&str] = &["--guest-rate", "off", "--ip-rate", "off"];

/// Runs `f`, failing the test if it takes longer than `limit`.
async fn bounded<F: std::future::Future>(limit: Duration, what: &str, f: F) -> F::Output {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {limit:?}"))
}

/// Requests the API node counted, whatever the route, except its own
/// `/metrics` scrapes.
async fn api_requests(node: &ApiNode) -> f64 {
    api_requests_where(node, |l| !l.contains("route=\"metrics\"")).await
}

/// Requests the API node counted on the samples `keep` accepts.
async fn api_requests_where(node: &ApiNode, keep: impl Fn(&str) -> bool) -> f64 {
    let body = http()
        .get(format!("{}/metrics", node.base))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    body.lines()
        .filter(|l| l.starts_with("chatty_api_requests_total{") && keep(l))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Asserts an answer is `status` with the JSON error body `code`.
async fn expect_error(resp: reqwest::Response, status: u16, code: &str, what: &str) {
    let got = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(got, status, "{what}: status {got}, body {body}");
    let v: serde_json::Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{what}: error body is not JSON ({e}): {body}"));
    assert_eq!(v["error"]["code"], code, "{what}: {body}");
    assert!(v["error"]["message"].is_string(), "{what}: {body}");
}

/// Writes `request` on a fresh connection (in the background, tolerating a
/// reset once the server has answered) and reads the answer until the
/// server closes or `limit` passes; returns the bytes read.
async fn raw_exchange(addr: &str, request: Vec<u8>, limit: Duration) -> Vec<u8> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut r, mut w) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = w.write_all(&request).await;
        // Keep the write half open until the server closes.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(w);
    });
    let mut got = Vec::new();
    let mut buf = vec![0u8; 8192];
    let _ = tokio::time::timeout(limit, async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    writer.abort();
    got
}

fn status_of(answer: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"))
}

fn body_of(answer: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(answer);
    let (_, body) = text.split_once("\r\n\r\n").expect("header end");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {body:?}"))
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// The soft open-files limit of a process (`self` or a pid).
fn open_files_limit(pid: &str) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("proc limits");
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX)
}

fn retry_after(resp: &reqwest::Response) -> u64 {
    resp.headers()
        .get("retry-after")
        .expect("Retry-After on a 429")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("Retry-After in seconds")
}

// ---------------------------------------------------------------- rate limits

#[tokio::test]
async fn the_api_ip_rate_limit_answers_429_with_retry_after_through_the_edge() {
    let s = stack(1, &["--ip-rate", "5/10s", "--guest-rate", "off"], &[]).await;
    bounded(Duration::from_secs(60), "ip rate limit", async {
        let join = || {
            http()
                .post(format!("{}/v1/sites/acme/rooms/hall/join", s.edge.base))
                .json(&serde_json::json!({"nick": "ann"}))
        };
        for i in 0..5 {
            let r = join().send().await.expect("join");
            assert_eq!(r.status(), 200, "join {i} within the limit");
        }
        let r = join().send().await.expect("join");
        // A sliding window: up to the rest of this window and a fifth of the
        // next (see the guest-rate test).
        let wait = retry_after(&r);
        assert!((1..=12).contains(&wait), "Retry-After {wait}");
        expect_error(r, 429, "rate_limited", "6th join from one address").await;
        // A client cannot pick its address: the edge appends the peer's, and
        // the API counts the last hop.
        let r = join()
            .header("x-forwarded-for", "203.0.113.9")
            .send()
            .await
            .expect("join");
        expect_error(r, 429, "rate_limited", "join with a forged X-Forwarded-For").await;
        assert!(
            chatty_tests::procs::metric(
                &format!("{}/metrics", s.api().base),
                "chatty_api_rate_limited_total{scope=\"ip\"}"
            )
            .await
                >= 2.0
        );
        // The edge itself has no request rate limit (see docs/security.md):
        // every one of these reached the API.
        assert_eq!(
            s.edge
                .metric("chatty_edge_rejected_total{reason=\"rate_limited\"}")
                .await,
            0.0
        );
    })
    .await;
}

#[tokio::test]
async fn the_api_guest_rate_limit_answers_429_through_the_edge_per_guest() {
    let s = stack(1, &["--ip-rate", "off", "--guest-rate", "3/10s"], &[]).await;
    bounded(Duration::from_secs(60), "guest rate limit", async {
        let a = Guest::join(&s.edge.base, "acme", "hall", "ann").await;
        let b = Guest::join(&s.edge.base, "acme", "hall", "bob").await;
        let send = |g: &Guest, id: &str| {
            http()
                .post(format!("{}/v1/sites/acme/rooms/hall/messages", s.edge.base))
                .bearer_auth(&g.joined.token)
                .json(&serde_json::json!({"text": "hi", "client_id": id}))
        };
        for i in 0..3 {
            let r = send(&a, &format!("a{i}")).send().await.expect("send");
            assert_eq!(r.status(), 201, "send {i} within the limit");
        }
        let r = send(&a, "a3").send().await.expect("send");
        // A sliding window: a full window asks for the rest of it and then
        // a third of the next one, before the old hits weigh little enough.
        let wait = retry_after(&r);
        assert!((1..=14).contains(&wait), "Retry-After {wait}");
        expect_error(r, 429, "rate_limited", "4th send of one guest").await;
        // The limit is per guest: another guest still sends.
        let r = send(&b, "b0").send().await.expect("send");
        assert_eq!(r.status(), 201, "another guest");
    })
    .await;
}

#[tokio::test]
async fn the_edge_refuses_connections_beyond_the_per_address_cap() {
    let s = stack(1, RATES_OFF, &["--max-conns-per-ip", "20"]).await;
    bounded(Duration::from_secs(60), "connection cap", async {
        let addr = s.edge_addr();
        // 20 connections hold their places with an unfinished header.
        let mut held = Vec::new();
        for _ in 0..20 {
            let mut c = TcpStream::connect(&addr).await.expect("connect");
            c.write_all(b"GET /healthz HTTP/1.1\r\n")
                .await
                .expect("write");
            held.push(c);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = s
            .edge
            .metric("chatty_edge_rejected_total{reason=\"conn_limit\"}")
            .await;
        let answer = raw_exchange(
            &addr,
            b"GET /v1/sites/acme/rooms/hall/messages HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(
            status_of(&answer),
            429,
            "{}",
            String::from_utf8_lossy(&answer)
        );
        let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        assert!(text.contains("retry-after:"), "{text}");
        assert_eq!(body_of(&answer)["error"]["code"], "rate_limited");
        assert_eq!(
            s.edge
                .metric("chatty_edge_rejected_total{reason=\"conn_limit\"}")
                .await,
            before + 1.0
        );
        // Places are given back when connections close.
        drop(held);
        wait_for(
            Duration::from_secs(5),
            "a poll after the cap frees",
            || async {
                let r = http()
                    .get(format!(
                        "{}/v1/sites/acme/rooms/hall/messages?after=0",
                        s.edge.base
                    ))
                    .send()
                    .await
                    .ok()?;
                (r.status() == 200).then_some(())
            },
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn the_edge_limits_requests_per_address_before_any_node() {
    let s = stack(1, RATES_OFF, &["--ip-rate", "20/10s"]).await;
    bounded(Duration::from_secs(60), "edge request rate", async {
        // Each poll for another `after`, so that none is a page the edge
        // keeps: every one let through reaches the node.
        let poll = |after: usize| {
            format!(
                "{}/v1/sites/acme/rooms/hall/messages?after={after}",
                s.edge.base
            )
        };
        let mut answers = Vec::new();
        for i in 0..30 {
            let r = http().get(poll(i)).send().await.expect("poll");
            answers.push(r);
        }
        let ok = answers.iter().filter(|r| r.status() == 200).count();
        assert_eq!(ok, 20, "requests within the limit pass");
        let polls_seen = || api_requests_where(s.api(), |l| l.contains("route=\"messages_get\""));
        let api_before = polls_seen().await;
        assert_eq!(api_before, 20.0, "the node saw the polls let through");
        let refused = answers.pop().expect("30 answers");
        let wait = retry_after(&refused);
        assert!((1..=20).contains(&wait), "Retry-After {wait}");
        expect_error(refused, 429, "rate_limited", "request over the edge's rate").await;
        // Refused at the edge: nothing more reached the node.
        for i in 30..35 {
            let r = http().get(poll(i)).send().await.expect("poll");
            assert_eq!(r.status(), 429);
        }
        assert_eq!(polls_seen().await, api_before);
        assert!(
            s.edge
                .metric("chatty_edge_rejected_total{reason=\"rate_limited\"}")
                .await
                >= 15.0
        );
    })
    .await;
}

// ------------------------------------------------------------- invented rooms

/// How one poll of an invented room went wrong.
async fn poll_failure(r: Result<reqwest::Response, reqwest::Error>) -> Option<String> {
    match r {
        Ok(r) if r.status() == 200 || r.status() == 304 => None,
        // Load shed by an overloaded API node (its store calls time out),
        // as documented; debug builds on two shared cores reach it under
        // this flood. A 503 of the edge's own is a failure.
        Ok(r) if r.status() == 503 && r.headers().contains_key("retry-after") => {
            let body = r.text().await.unwrap_or_default();
            Some(if body.contains("service unavailable, retry later") {
                "shed: 503 with Retry-After".into()
            } else {
                format!("status 503: {body}")
            })
        }
        Ok(r) => Some(format!("status {}", r.status().as_u16())),
        Err(e) if e.is_timeout() => Some("client timeout".into()),
        Err(e) => Some(format!("error: {e}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_invented_rooms_a_second_keep_the_edge_memory_flat() {
    // A cap a debug build can fill in a few seconds; the bound is the same
    // code at any size.
    const CAP: f64 = 2_000.0;
    const TARGET_PER_SEC: f64 = 10_000.0;
    const TASKS: usize = 200;
    const RSS_GROWTH_LIMIT_KIB: u64 = 32 * 1024;
    let s = stack(2, RATES_OFF, &["--max-rooms", "2000", "--ip-rate", "off"]).await;
    bounded(Duration::from_secs(120), "invented rooms", async {
        let pid = s.edge.proc.pid();
        let sent = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(TASKS)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let start = Instant::now();
        let interval = Duration::from_secs_f64(TASKS as f64 / TARGET_PER_SEC);
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let (client, sent, failures, stop) =
                (client.clone(), sent.clone(), failures.clone(), stop.clone());
            let base = s.edge.base.clone();
            tasks.push(tokio::spawn(async move {
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
            }));
        }
        // Warm-up: the map fills to its cap (then every new room evicts one)
        // and the allocator settles.
        wait_for(Duration::from_secs(60), "the map full", || async {
            let entries = s.edge.metric("chatty_edge_map_entries").await;
            (entries >= 0.9 * CAP).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let warm_rss = rss_kib(pid);
        let warm_sent = sent.load(Ordering::Relaxed);
        let warm_evictions = s.edge.metric("chatty_edge_map_evictions_total").await;
        let warm_at = Instant::now();
        let mut max_rss = warm_rss;
        let mut max_entries: f64 = 0.0;
        while warm_at.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            max_rss = max_rss.max(rss_kib(pid));
            let entries = s.edge.metric("chatty_edge_map_entries").await;
            max_entries = max_entries.max(entries);
            assert!(entries <= CAP, "map holds {entries} entries, cap {CAP}");
        }
        let measured = sent.load(Ordering::Relaxed) - warm_sent;
        let secs = warm_at.elapsed().as_secs_f64();
        let evictions = s.edge.metric("chatty_edge_map_evictions_total").await - warm_evictions;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.expect("poller");
        }
        let end_rss = rss_kib(pid);
        let growth = max_rss.max(end_rss).saturating_sub(warm_rss);
        let failures = failures.lock().expect("failures").clone();
        println!(
            "invented rooms: {measured} in {secs:.1} s after warm-up = {:.0}/s (target \
             {TARGET_PER_SEC}/s); edge RSS after warm-up {warm_rss} KiB, max {max_rss} KiB, \
             end {end_rss} KiB, growth {growth} KiB; map entries max {max_entries} (cap {CAP}), \
             {evictions} evictions while measured; {} of {} polls failed: {:?}",
            measured as f64 / secs,
            failures.len(),
            sent.load(Ordering::Relaxed),
            &failures[..failures.len().min(5)],
        );
        // An overloaded machine may time a client out, and an overloaded
        // node sheds load with 503 + Retry-After; nothing else may fail.
        let errors: Vec<_> = failures
            .iter()
            .filter(|f| !matches!(f.as_str(), "client timeout" | "shed: 503 with Retry-After"))
            .collect();
        assert!(
            errors.is_empty(),
            "polls of invented rooms failed: {errors:?}"
        );
        assert!(max_entries > 0.0 && max_entries <= CAP);
        assert!(evictions > 0.0, "no room was evicted while measured");
        assert!(
            growth < RSS_GROWTH_LIMIT_KIB,
            "edge RSS grew by {growth} KiB after warm-up (limit {RSS_GROWTH_LIMIT_KIB} KiB)"
        );
    })
    .await;
}

// ------------------------------------------------------------------ slowloris

/// What one slow connection saw.
#[derive(Debug)]
enum Slow {
    /// Closed by the edge after this long; whether it answered 408 first.
    Closed(Duration, bool),
    NotClosed,
    ConnectFailed(String),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slowloris_connections_do_not_starve_real_clients() {
    const SLOW: usize = 1000;
    let own_limit = open_files_limit("self");
    assert!(
        own_limit >= 3 * SLOW as u64,
        "open-files limit {own_limit} is too low for {SLOW} connections: raise it (`ulimit -n 4096`)"
    );
    let s = stack(
        1,
        RATES_OFF,
        &[
            "--header-timeout",
            "2s",
            "--max-conns-per-ip",
            "2000",
            "--ip-rate",
            "off",
        ],
    )
    .await;
    let edge_limit = open_files_limit(&s.edge.proc.pid().to_string());
    println!("open-files limit: test {own_limit}, edge {edge_limit}");
    assert!(
        edge_limit >= 2 * SLOW as u64,
        "the edge's open-files limit {edge_limit} is too low for {SLOW} connections"
    );
    bounded(Duration::from_secs(90), "slowloris", async {
        let g = Guest::join(&s.edge.base, "acme", "hall", "ann").await;
        let before_timeouts = s
            .edge
            .metric("chatty_edge_rejected_total{reason=\"header_timeout\"}")
            .await;
        let addr = s.edge_addr();
        let opened = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut attackers = Vec::new();
        for _ in 0..SLOW {
            let (addr, opened, stop) = (addr.clone(), opened.clone(), stop.clone());
            // Each attacker reconnects as soon as the edge drops it, so about
            // SLOW connections are held for as long as the attack lasts.
            attackers.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    seen.push(slow_connection(&addr, &opened).await);
                }
                seen
            }));
        }
        wait_for(
            Duration::from_secs(10),
            "1,000 slow connections open",
            || {
                let n = opened.load(Ordering::Relaxed);
                async move { (n >= SLOW as u64).then_some(()) }
            },
        )
        .await;
        // Real clients, fresh connections each time, while the attack runs.
        let attack = Instant::now();
        let mut worst = Duration::ZERO;
        let mut n = 0;
        while attack.elapsed() < Duration::from_secs(6) {
            n += 1;
            let t = Instant::now();
            let r = tokio::time::timeout(
                Duration::from_secs(2),
                http()
                    .get(format!(
                        "{}/v1/sites/acme/rooms/hall/messages?after=0",
                        s.edge.base
                    ))
                    .send(),
            )
            .await
            .expect("a poll took over 2 s during the attack")
            .expect("poll");
            assert_eq!(r.status(), 200);
            worst = worst.max(t.elapsed());
            let t = Instant::now();
            tokio::time::timeout(Duration::from_secs(2), async {
                g.client
                    .send("hall", &g.joined.token, "still here", &format!("s{n}"))
                    .await
            })
            .await
            .expect("a send took over 2 s during the attack")
            .expect("send");
            worst = worst.max(t.elapsed());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let mut closed = 0;
        let mut answered_408 = 0;
        let mut longest = Duration::ZERO;
        for a in attackers {
            for seen in a.await.expect("attacker") {
                match seen {
                    Slow::Closed(lived, got_408) => {
                        closed += 1;
                        answered_408 += usize::from(got_408);
                        longest = longest.max(lived);
                    }
                    Slow::NotClosed => panic!("a slow connection outlived 10 s"),
                    Slow::ConnectFailed(e) => panic!("a slow connection was refused: {e}"),
                }
            }
        }
        let timeouts = s
            .edge
            .metric("chatty_edge_rejected_total{reason=\"header_timeout\"}")
            .await
            - before_timeouts;
        println!(
            "slowloris: {closed} slow connections closed by the edge (longest {longest:?}, \
             {answered_408} answered 408), header_timeout rejections {timeouts}; \
             {n} polls and {n} sends meanwhile, slowest {worst:?}"
        );
        assert!(closed >= SLOW, "only {closed} slow connections closed");
        assert!(
            longest < Duration::from_millis(3500),
            "a slow connection lived {longest:?} with --header-timeout 2s"
        );
        assert!(
            answered_408 * 10 >= closed * 9,
            "{answered_408} of {closed} got a 408"
        );
        assert!(
            timeouts >= SLOW as f64,
            "{timeouts} header timeouts counted"
        );
    })
    .await;
}

// ------------------------------------------------------ oversized requests

#[tokio::test]
async fn oversized_headers_and_bodies_are_refused_early() {
    let s = stack(1, RATES_OFF, &[]).await;
    bounded(Duration::from_secs(60), "oversized requests", async {
        let g = Guest::join(&s.edge.base, "acme", "hall", "ann").await;
        let addr = s.edge_addr();
        let api_before = api_requests(s.api()).await;

        // A 64 KiB header: 431 from the edge.
        let mut req =
            b"GET /v1/sites/acme/rooms/hall/messages?after=0 HTTP/1.1\r\nHost: x\r\nX-Big: "
                .to_vec();
        req.extend(std::iter::repeat_n(b'a', 64 * 1024));
        req.extend_from_slice(b"\r\n\r\n");
        let answer = raw_exchange(&addr, req, Duration::from_secs(2)).await;
        let status = status_of(&answer);
        assert!(status == 431 || status == 400, "64 KiB header: {status}");
        assert_eq!(
            s.edge
                .metric("chatty_edge_rejected_total{reason=\"header_too_large\"}")
                .await,
            1.0
        );

        // A 1 MiB body announced by Content-Length: 413 before a byte of it
        // is sent.
        let head = format!(
            "POST /v1/sites/acme/rooms/hall/messages HTTP/1.1\r\nHost: x\r\n\
             Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            g.joined.token,
            1024 * 1024
        );
        let t = Instant::now();
        let answer = raw_exchange(&addr, head.into_bytes(), Duration::from_secs(2)).await;
        assert_eq!(
            status_of(&answer),
            413,
            "{}",
            String::from_utf8_lossy(&answer)
        );
        assert_eq!(body_of(&answer)["error"]["code"], "too_large");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "413 after {:?}",
            t.elapsed()
        );
        assert_eq!(
            api_requests(s.api()).await,
            api_before,
            "a refused header or body reached the API"
        );

        // A chunked body that grows past the limit: 413.
        let mut req = format!(
            "POST /v1/sites/acme/rooms/hall/messages HTTP/1.1\r\nHost: x\r\n\
             Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n",
            g.joined.token
        )
        .into_bytes();
        for _ in 0..16 {
            req.extend_from_slice(b"1000\r\n");
            req.extend(std::iter::repeat_n(b' ', 4096));
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
        let answer = raw_exchange(&addr, req, Duration::from_secs(3)).await;
        assert_eq!(
            status_of(&answer),
            413,
            "{}",
            String::from_utf8_lossy(&answer)
        );
        assert_eq!(body_of(&answer)["error"]["code"], "too_large");
        assert_eq!(
            s.edge
                .metric("chatty_edge_rejected_total{reason=\"body_too_large\"}")
                .await,
            2.0
        );

        // The API on its own refuses a 17 KiB JSON body with a JSON 413.
        let text = "x".repeat(17 * 1024);
        let r = http()
            .post(format!(
                "{}/v1/sites/acme/rooms/hall/messages",
                s.api().base
            ))
            .bearer_auth(&g.joined.token)
            .json(&serde_json::json!({"text": text, "client_id": "big"}))
            .send()
            .await
            .expect("send");
        expect_error(r, 413, "too_large", "17 KiB body to the API").await;
        // And a chunked one (no Content-Length) too.
        let body = serde_json::json!({"text": text, "client_id": "big2"}).to_string();
        let mut req = format!(
            "POST /v1/sites/acme/rooms/hall/messages HTTP/1.1\r\nHost: x\r\n\
             Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n",
            g.joined.token
        )
        .into_bytes();
        for piece in body.as_bytes().chunks(1024) {
            req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            req.extend_from_slice(piece);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
        let api_addr = format!("127.0.0.1:{}", s.api().port);
        let answer = raw_exchange(&api_addr, req, Duration::from_secs(3)).await;
        assert_eq!(
            status_of(&answer),
            413,
            "{}",
            String::from_utf8_lossy(&answer)
        );
        assert_eq!(body_of(&answer)["error"]["code"], "too_large");
    })
    .await;
}

// -------------------------------------------------------------------- tokens

#[tokio::test]
async fn guest_tokens_are_refused_outside_their_room_and_when_forged() {
    let s = stack(1, RATES_OFF, &[]).await;
    bounded(Duration::from_secs(60), "tokens", async {
        create_site(&s.api().base, "other").await;
        let g = Guest::join(&s.edge.base, "acme", "hall", "ann").await;
        let token = g.joined.token.clone();
        let send = |base: &str, site: &str, room: &str, token: &str, id: &str| {
            http()
                .post(format!("{base}/v1/sites/{site}/rooms/{room}/messages"))
                .bearer_auth(token)
                .json(&serde_json::json!({"text": "hi", "client_id": id}))
        };
        let (payload, mac) = token.split_once('.').expect("payload.mac");
        // The last character of a base64url MAC carries padding bits: change
        // one in the middle.
        let mut forged_mac = mac.as_bytes().to_vec();
        let mid = forged_mac.len() / 2;
        forged_mac[mid] = if forged_mac[mid] == b'A' { b'B' } else { b'A' };
        let forged = format!(
            "{payload}.{}",
            String::from_utf8(forged_mac).expect("ascii")
        );
        let unsigned = format!("{payload}.");
        for base in [&s.edge.base, &s.api().base] {
            let r = send(base, "acme", "kitchen", &token, "x1")
                .send()
                .await
                .expect("send");
            expect_error(r, 401, "unauthorized", "token of another room").await;
            let r = send(base, "other", "hall", &token, "x2")
                .send()
                .await
                .expect("send");
            expect_error(r, 401, "unauthorized", "token of another site").await;
            let r = send(base, "acme", "hall", &forged, "x3")
                .send()
                .await
                .expect("send");
            expect_error(r, 401, "unauthorized", "forged signature").await;
            let r = send(base, "acme", "hall", &unsigned, "x4")
                .send()
                .await
                .expect("send");
            expect_error(r, 401, "unauthorized", "no signature").await;
            let r = http()
                .post(format!("{base}/v1/sites/acme/rooms/hall/messages"))
                .json(&serde_json::json!({"text": "hi", "client_id": "x5"}))
                .send()
                .await
                .expect("send");
            expect_error(r, 401, "unauthorized", "no token").await;
            let r = http()
                .post(format!("{base}/v1/sites/acme/rooms/kitchen/heartbeat"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("heartbeat");
            expect_error(
                r,
                401,
                "unauthorized",
                "heartbeat with another room's token",
            )
            .await;
            let r = http()
                .post(format!("{base}/v1/sites/acme/rooms/kitchen/join"))
                .bearer_auth(&token)
                .json(&serde_json::json!({"nick": "ann"}))
                .send()
                .await
                .expect("join");
            expect_error(r, 401, "unauthorized", "join with another room's token").await;
        }
        // The token works where it belongs.
        let r = send(&s.edge.base, "acme", "hall", &token, "ok")
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 201);
    })
    .await;
}

// ---------------------------------------------------------------- admin

#[tokio::test]
async fn admin_endpoints_need_the_site_secret_and_operator_endpoints_the_operator_token() {
    let s = stack(1, RATES_OFF, &[]).await;
    bounded(Duration::from_secs(60), "admin secrets", async {
        let other_secret = create_site(&s.api().base, "other").await;
        let g = Guest::join(&s.edge.base, "acme", "hall", "ann").await;
        let sent = g.send("rude", "c1").await;
        let base = &s.edge.base;
        let wrong: [(&str, Option<&str>); 3] = [
            ("no secret", None),
            ("another site's secret", Some(&other_secret)),
            ("the operator token", Some(ADMIN_TOKEN)),
        ];
        let with = |rb: reqwest::RequestBuilder, secret: Option<&str>| match secret {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        };

        let delete_url = format!("{base}/v1/sites/acme/rooms/hall/messages/{}", sent.seq);
        let bans_url = format!("{base}/v1/sites/acme/bans");
        let limits_url = format!("{base}/v1/sites/acme/limits");
        let ban = serde_json::json!({"member_id": g.joined.member.id});
        let limits = serde_json::json!({"max_text_bytes": 500, "guest_messages": 2, "guest_window_secs": 60});
        for (what, secret) in wrong {
            let r = with(http().delete(&delete_url), secret).send().await.expect("delete");
            expect_error(r, 401, "unauthorized", &format!("delete with {what}")).await;
            let r = with(http().post(&bans_url).json(&ban), secret).send().await.expect("ban");
            expect_error(r, 401, "unauthorized", &format!("ban with {what}")).await;
            let r = with(http().put(&limits_url).json(&limits), secret)
                .send()
                .await
                .expect("limits");
            expect_error(r, 401, "unauthorized", &format!("limits with {what}")).await;
        }
        // Nothing happened: the message is still there, the guest still sends.
        g.send("still here", "c2").await;

        // With the right secret.
        let r = http().delete(&delete_url).bearer_auth(&s.secret).send().await.expect("delete");
        assert_eq!(r.status(), 200);
        let ev: serde_json::Value = r.json().await.expect("deletion event");
        assert_eq!(ev["kind"], "deletion");
        assert_eq!(ev["deletes"], sent.seq);
        let r = http().put(&limits_url).bearer_auth(&s.secret).json(&limits).send().await.expect("limits");
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<serde_json::Value>().await.expect("limits body"), limits);
        let r = http().post(&bans_url).bearer_auth(&s.secret).json(&ban).send().await.expect("ban");
        assert_eq!(r.status(), 204);
        let r = http()
            .post(format!("{base}/v1/sites/acme/rooms/hall/messages"))
            .bearer_auth(&g.joined.token)
            .json(&serde_json::json!({"text": "hi", "client_id": "c3"}))
            .send()
            .await
            .expect("send");
        expect_error(r, 403, "banned", "send after the ban").await;
        // The site's own flood limit (2 per minute) applies to a new guest.
        let h = Guest::join(base, "acme", "hall", "bob").await;
        h.send("one", "h1").await;
        h.send("two", "h2").await;
        let r = http()
            .post(format!("{base}/v1/sites/acme/rooms/hall/messages"))
            .bearer_auth(&h.joined.token)
            .json(&serde_json::json!({"text": "three", "client_id": "h3"}))
            .send()
            .await
            .expect("send");
        assert!(r.headers().contains_key("retry-after"));
        expect_error(r, 429, "rate_limited", "third send under the site's limit").await;

        // Operator endpoints: the operator token only.
        let sites_url = format!("{base}/v1/admin/sites");
        let new_site = serde_json::json!({"id": "newco", "origins": ["https://newco.example"]});
        for (what, secret) in [("no token", None), ("a site secret", Some(s.secret.as_str()))] {
            let r = with(http().post(&sites_url).json(&new_site), secret)
                .send()
                .await
                .expect("create site");
            expect_error(r, 401, "unauthorized", &format!("create site with {what}")).await;
            let r = with(http().get(&sites_url), secret).send().await.expect("list sites");
            expect_error(r, 401, "unauthorized", &format!("list sites with {what}")).await;
        }
        let r = http().post(&sites_url).bearer_auth(ADMIN_TOKEN).json(&new_site).send().await.expect("create");
        assert_eq!(r.status(), 201);
        let r = http().get(&sites_url).bearer_auth(ADMIN_TOKEN).send().await.expect("list");
        assert_eq!(r.status(), 200);
        let sites: serde_json::Value = r.json().await.expect("sites");
        assert_eq!(sites.as_array().map(Vec::len), Some(3), "{sites}");
    })
    .await;
}
