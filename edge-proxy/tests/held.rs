//! Held polls (`Prefer: wait`) end to end, in process, against the
//! stand-in API node: held until the room moves or the wait ends, one
//! upstream fetch for polls let go together, released when the edge stops.
//! A binary of their own, so the counts they leave in the process's metrics
//! do not mix with those `edge.rs` checks.

use std::net::SocketAddr;
use std::time::Duration;

use edge_proxy::{BusSource, EdgeConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

// Each binary uses part of the shared fixture.
#[allow(dead_code)]
mod fixture;
use fixture::*;

/// A GET of `path` with `If-None-Match: etag` that prefers to wait `wait`
/// seconds, on its own task; the reply and how long it took.
fn held_get(
    addr: SocketAddr,
    path: &'static str,
    etag: &'static str,
    wait: u64,
) -> tokio::task::JoinHandle<(Reply, Duration)> {
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let prefer = format!("wait={wait}");
        let headers = [("If-None-Match", etag), ("Prefer", prefer.as_str())];
        let r = get(addr, path, &headers).await.unwrap();
        (r, start.elapsed())
    })
}

/// A send through the edge (the stand-in node moves the room on).
async fn post(addr: SocketAddr) -> Reply {
    let raw = format!(
        "POST {LOBBY} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    request(addr, raw).await.unwrap()
}

const AFTER3: &str = "/v1/sites/demo/rooms/lobby/messages?after=3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_polls_wait_for_a_move_or_their_time() {
    let up = Upstream::start().await;
    let edge = Edge::start(config(&up), BusSource::None).await;
    get(edge.addr, AFTER3, &[]).await.unwrap();
    get(edge.addr, LOBBY_MEMBERS, &[]).await.unwrap();
    assert_eq!(up.hits(), 2);

    // Unchanged, with nothing to wake them: 304 once their wait ends.
    let msgs = held_get(edge.addr, AFTER3, "\"r1.3\"", 1);
    let mems = held_get(edge.addr, LOBBY_MEMBERS, "\"m2\"", 1);
    for held in [msgs, mems] {
        let (r, took) = held.await.unwrap();
        assert_eq!(r.status, 304, "{r:?}");
        assert_eq!(r.header("preference-applied").as_deref(), Some("wait=1"));
        assert!(r.header("etag").is_some());
        assert!(took >= Duration::from_millis(950), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
    assert_eq!(up.hits(), 2, "held without a request to the node");

    // A send through the edge moves the room: the held poll is answered
    // with the new page at once (a long wait is capped at 30 s).
    let held = held_get(edge.addr, AFTER3, "\"r1.3\"", 600);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished());
    assert_eq!(post(edge.addr).await.status, 201);
    let (r, took) = held.await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("etag").as_deref(), Some("\"r1.4\""));
    assert_eq!(r.header("preference-applied").as_deref(), Some("wait=30"));
    assert!(took < Duration::from_secs(2), "{took:?}");

    // Another ETag than the current one, or no preference: answered at once.
    let stale = held_get(edge.addr, AFTER3, "\"r1.3\"", 10);
    let (r, took) = stale.await.unwrap();
    assert_eq!((r.status, r.header("preference-applied")), (200, None));
    assert!(took < Duration::from_secs(1), "{took:?}");
    let r = get(edge.addr, AFTER3, &[("If-None-Match", "\"r1.4\"")])
        .await
        .unwrap();
    assert_eq!((r.status, r.header("preference-applied")), (304, None));

    // A client that goes away while held gives its place back at once.
    let gone = "chatty_edge_held_releases_total{reason=\"gone\"}";
    let before = metric(&edge, gone).await;
    let mut sock = TcpStream::connect(edge.addr).await.unwrap();
    let head = format!(
        "GET {AFTER3} HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"r1.4\"\r\nPrefer: wait=30\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(sock);
    let mut after = before;
    for _ in 0..50 {
        after = metric(&edge, gone).await;
        if after > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(after, before + 1.0);
}

/// One sample of the edge's metrics page (0 when absent).
async fn metric(edge: &Edge, sample: &str) -> f64 {
    let page = get(edge.admin, "/metrics", &[]).await.unwrap().body;
    page.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_released_together_make_one_upstream_fetch() {
    const POLLS: usize = 40;
    let up = Upstream::start().await;
    let edge = Edge::start(config(&up), BusSource::None).await;
    get(edge.addr, AFTER3, &[]).await.unwrap();
    let held: Vec<_> = (0..POLLS)
        .map(|_| held_get(edge.addr, AFTER3, "\"r1.3\"", 10))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = up.hits();
    assert_eq!(before, 1);
    assert_eq!(post(edge.addr).await.status, 201);
    let mut bodies = std::collections::HashSet::new();
    for h in held {
        let (r, took) = h.await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("etag").as_deref(), Some("\"r1.4\""));
        assert!(took < Duration::from_secs(5), "{took:?}");
        bodies.insert(r.body);
    }
    assert_eq!(bodies.len(), 1);
    assert_eq!(up.hits(), before + 2, "the send and one fetch of the page");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_polls_are_released_with_304_when_the_edge_stops() {
    let up = Upstream::start().await;
    // Requests in flight would get 2 s; held polls are answered at once.
    let drain = Duration::from_secs(3);
    let edge = Edge::start_draining(config(&up), BusSource::None, drain).await;
    get(edge.addr, AFTER3, &[]).await.unwrap();
    let held: Vec<_> = (0..5)
        .map(|_| held_get(edge.addr, AFTER3, "\"r1.3\"", 30))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = tokio::time::Instant::now();
    let stopping = tokio::task::spawn_blocking(move || drop(edge));
    for h in held {
        let (r, _) = h.await.unwrap();
        assert_eq!(r.status, 304, "{r:?}");
        assert_eq!(r.header("etag").as_deref(), Some("\"r1.3\""));
        assert!(stopped.elapsed() < Duration::from_secs(1), "{r:?}");
    }
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_held_a_poll_is_answered_at_once() {
    let up = Upstream::start().await;
    let config = EdgeConfig {
        max_held: 1,
        ..config(&up)
    };
    let edge = Edge::start(config, BusSource::None).await;
    get(edge.addr, AFTER3, &[]).await.unwrap();
    let first = held_get(edge.addr, AFTER3, "\"r1.3\"", 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (r, took) = held_get(edge.addr, AFTER3, "\"r1.3\"", 2).await.unwrap();
    assert_eq!((r.status, r.header("preference-applied")), (304, None));
    assert!(took < Duration::from_secs(1), "{took:?}");
    let (r, took) = first.await.unwrap();
    assert_eq!(r.status, 304);
    assert_eq!(r.header("preference-applied").as_deref(), Some("wait=2"));
    assert!(took >= Duration::from_millis(1900), "{took:?}");
}
