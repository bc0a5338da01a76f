//! End-to-end tests of the edge, in process, against a stand-in API node.
//!
//! The stand-in (`Upstream`) is a TEST FIXTURE: a tiny HTTP/1.1 server on a
//! real socket that answers `/readyz` and room polls with ETags and counts
//! the requests it sees. It is not chat-api; the cross-process tests with
//! real API nodes live in the workspace's integration suite.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chatty_shared::RoomKey;
use chatty_shared::RoomVersion;
use chatty_shared::{BusEvent, BusMessage};
use edge_proxy::{BusSource, EdgeConfig};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

mod fixture;
use fixture::*;

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_from_memory_with_the_upstream_stopped() {
    let up = Upstream::start().await;
    let edge = Edge::start(config(&up), BusSource::None).await;

    // First poll: forwarded, learned.
    let r = get(
        edge.addr,
        "/v1/sites/demo/rooms/lobby/messages?after=0",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag").as_deref(), Some("\"r1.3\""));
    assert_eq!(up.hits(), 1);

    // Unchanged poll: 304 from memory (single, list, weak, split lines, *).
    for inm in [
        vec!["\"r1.3\""],
        vec!["\"r0.0\", W/\"r1.3\""],
        vec!["\"x\"", "\"r1.3\""],
        vec!["*"],
    ] {
        let headers: Vec<(&str, &str)> = inm.iter().map(|v| ("If-None-Match", *v)).collect();
        let r = get(
            edge.addr,
            "/v1/sites/demo/rooms/lobby/messages?after=3",
            &headers,
        )
        .await
        .unwrap();
        assert_eq!(r.status, 304, "{inm:?}");
        assert_eq!(r.header("etag").as_deref(), Some("\"r1.3\""));
        assert_eq!(r.header("cache-control").as_deref(), Some("no-cache"));
        assert!(r.body.is_empty());
    }
    assert_eq!(up.hits(), 1, "no poll reached the upstream");

    // The upstream goes away: unchanged polls are still answered.
    up.stop().await;
    let r = get(edge.addr, LOBBY, &[("If-None-Match", "\"r1.3\"")])
        .await
        .unwrap();
    assert_eq!(r.status, 304);

    // A different ETag (with no page kept for it), or an unknown room, is
    // forwarded: no healthy node.
    for (path, inm) in [
        ("/v1/sites/demo/rooms/lobby/messages?after=1", "\"r1.2\""),
        ("/v1/sites/demo/rooms/other/messages", "\"r1.3\""),
    ] {
        let r = get(edge.addr, path, &[("If-None-Match", inm)])
            .await
            .unwrap();
        assert!(r.status == 502 || r.status == 503, "{r:?}");
        assert!(r.body.contains(r#""code":"unavailable""#), "{r:?}");
        assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    }
    // Within two seconds the dead node is out of rotation: /readyz says so.
    let mut ready = 200;
    for _ in 0..25 {
        ready = get(edge.admin, "/readyz", &[]).await.unwrap().status;
        if ready == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learns_from_posts_members_and_upstream_304s() {
    let up = Upstream::start().await;
    let edge = Edge::start(config(&up), BusSource::None).await;

    // A POST answer carries the room's new ETag.
    let body = r#"{"text":"hi","client_id":"c1"}"#;
    let raw = format!(
        "POST {LOBBY} HTTP/1.1\r\nHost: chat.example\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let r = request(edge.addr, raw).await.unwrap();
    assert_eq!(r.status, 201);
    assert_eq!(r.header("etag").as_deref(), Some("\"r1.4\""));
    let r = get(edge.addr, LOBBY, &[("If-None-Match", "\"r1.4\"")])
        .await
        .unwrap();
    assert_eq!(r.status, 304);
    assert_eq!(up.hits(), 1);

    // An older ETag is forwarded and answered 200 by the node.
    let r = get(edge.addr, LOBBY, &[("If-None-Match", "\"r1.3\"")])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(up.hits(), 2);

    // Members: learned from a node's 304 as well as from a 200.
    let r = get(edge.addr, LOBBY_MEMBERS, &[("If-None-Match", "\"m2\"")])
        .await
        .unwrap();
    assert_eq!(r.status, 304);
    assert_eq!(up.hits(), 3, "unknown members version: forwarded");
    let r = get(edge.addr, LOBBY_MEMBERS, &[("If-None-Match", "\"m2\"")])
        .await
        .unwrap();
    assert_eq!(r.status, 304);
    assert_eq!(up.hits(), 3, "now answered from memory");
    // A members bump seen in an answer replaces the old version.
    up.members.store(3, Ordering::SeqCst);
    let r = get(edge.addr, LOBBY_MEMBERS, &[]).await.unwrap();
    assert_eq!(r.header("etag").as_deref(), Some("\"m3\""));
    let r = get(edge.addr, LOBBY_MEMBERS, &[("If-None-Match", "\"m2\"")])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let r = get(edge.addr, LOBBY_MEMBERS, &[("If-None-Match", "\"m3\"")])
        .await
        .unwrap();
    assert_eq!(r.status, 304);
    // A messages ETag does not match the members resource.
    let r = get(edge.addr, LOBBY_MEMBERS, &[("If-None-Match", "\"r1.4\"")])
        .await
        .unwrap();
    assert_eq!(r.status, 200);

    // An unknown room is forwarded even for `*`.
    let hits = up.hits();
    let r = get(
        edge.addr,
        "/v1/sites/demo/rooms/fresh/messages",
        &[("If-None-Match", "*")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(up.hits(), hits + 1);
    // Other paths are forwarded untouched.
    let r = get(edge.addr, "/v1/widget.js", &[]).await.unwrap();
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_a_message_behind_are_answered_from_the_page_cache() {
    let up = Upstream::start().await;
    let edge = Edge::start(config(&up), BusSource::None).await;
    let after2 = "/v1/sites/demo/rooms/lobby/messages?after=2";

    // The first guest one message behind: forwarded, and the page kept.
    let first = get(edge.addr, after2, &[("If-None-Match", "\"r1.2\"")])
        .await
        .unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(up.hits(), 1);
    // The next ones: the same answer from the edge.
    for _ in 0..3 {
        let r = get(edge.addr, after2, &[("If-None-Match", "\"r1.2\"")])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, first.body);
        assert_eq!(r.header("etag").as_deref(), Some("\"r1.3\""));
        assert_eq!(r.header("cache-control").as_deref(), Some("no-cache"));
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json")
        );
    }
    assert_eq!(up.hits(), 1, "one request reached the node");

    // Another `after`, or any other query, is not that page.
    for path in [
        "/v1/sites/demo/rooms/lobby/messages?after=1",
        "/v1/sites/demo/rooms/lobby/messages?after=2&limit=1",
    ] {
        let r = get(edge.addr, path, &[]).await.unwrap();
        assert_eq!(r.status, 200);
        assert!(
            r.body.contains(&path[path.find('?').unwrap() + 1..]),
            "{r:?}"
        );
    }
    assert_eq!(up.hits(), 3);

    // A send moves the room on: the kept page is for an old version.
    let r = request(
        edge.addr,
        format!("POST {LOBBY} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{{}}"),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201);
    let r = get(edge.addr, after2, &[]).await.unwrap();
    assert_eq!(r.header("etag").as_deref(), Some("\"r1.4\""));
    assert_eq!(up.hits(), 5, "the old page was not served");

    // That new page is served even with the node gone.
    up.stop().await;
    let r = get(edge.addr, after2, &[]).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag").as_deref(), Some("\"r1.4\""));
    let metrics = get(edge.admin, "/metrics", &[]).await.unwrap().body;
    assert!(
        metrics.contains("chatty_edge_requests_total{outcome=\"cached\"} 4"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_expire_after_max_age() {
    let up = Upstream::start().await;
    let edge = Edge::start(
        EdgeConfig {
            max_age: Duration::from_millis(300),
            ..config(&up)
        },
        BusSource::None,
    )
    .await;
    get(edge.addr, LOBBY, &[]).await.unwrap();
    let r = get(edge.addr, LOBBY, &[("If-None-Match", "\"r1.3\"")])
        .await
        .unwrap();
    assert_eq!((r.status, up.hits()), (304, 1));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = get(edge.addr, LOBBY, &[("If-None-Match", "\"r1.3\"")])
        .await
        .unwrap();
    assert_eq!(r.status, 304);
    assert_eq!(up.hits(), 2, "an expired entry is not trusted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_poll_refreshes_an_entry_before_it_expires() {
    let up = Upstream::start().await;
    let edge = Edge::start(
        EdgeConfig {
            max_age: Duration::from_millis(500),
            ip_rate: chatty_shared::RateSetting(None),
            ..config(&up)
        },
        BusSource::None,
    )
    .await;
    get(edge.addr, LOBBY, &[]).await.unwrap();
    // 20 pollers with the current ETag, back to back, for 2 s: 4 max-ages.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut pollers = JoinSet::new();
    for _ in 0..20 {
        let addr = edge.addr;
        pollers.spawn(async move {
            let mut answers = 0u32;
            while tokio::time::Instant::now() < deadline {
                let r = get(addr, LOBBY, &[("If-None-Match", "\"r1.3\"")])
                    .await
                    .unwrap();
                assert_eq!(r.status, 304);
                answers += 1;
            }
            answers
        });
    }
    let mut answers = 0;
    while let Some(n) = pollers.join_next().await {
        answers += n.unwrap();
    }
    // Re-confirmed once per 400 ms (the last fifth of max-age), by one poll:
    // about 5 reach the node, not every poll in flight at each expiry.
    let forwarded = up.hits() - 1;
    assert!(
        (1..=8).contains(&forwarded),
        "{forwarded} of {answers} polls reached the node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_bumps_and_down() {
    let up = Upstream::start().await;
    let (tx, rx) = mpsc::channel(64);
    let bus = Arc::new(ScriptedBus {
        rx: Mutex::new(Some(rx)),
    });
    let edge = Edge::start(config(&up), BusSource::Shared(bus)).await;
    tx.send(BusEvent::Up).await.unwrap();
    let beat = tx.clone();
    let heartbeats = tokio::spawn(async move {
        loop {
            let hb = BusEvent::Message(BusMessage::Heartbeat {
                node: "api-1".into(),
            });
            if beat.send(hb).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    get(edge.addr, LOBBY, &[]).await.unwrap();
    let r = get(edge.addr, LOBBY, &[("If-None-Match", "\"r1.3\"")])
        .await
        .unwrap();
    assert_eq!((r.status, up.hits()), (304, 1));

    // A bump makes the old ETag stale at once; the new one is answered.
    up.seq.store(4, Ordering::SeqCst);
    tx.send(BusEvent::Message(BusMessage::Room {
        key: RoomKey::new("demo", "lobby").unwrap(),
        version: RoomVersion::new(1, 4),
    }))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = get(edge.addr, LOBBY, &[("If-None-Match", "\"r1.3\"")])
        .await
        .unwrap();
    assert_eq!((r.status, up.hits()), (200, 2));
    let r = get(edge.addr, LOBBY, &[("If-None-Match", "\"r1.4\"")])
        .await
        .unwrap();
    assert_eq!((r.status, up.hits()), (304, 2));
    let ready = get(edge.admin, "/readyz", &[]).await.unwrap();
    assert!(ready.body.contains(r#""bus":"ok""#), "{ready:?}");

    // The bus is lost: everything is forgotten, the next poll is forwarded.
    tx.send(BusEvent::Down).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ready = get(edge.admin, "/readyz", &[]).await.unwrap();
    assert!(ready.body.contains(r#""rooms":0"#), "{ready:?}");
    let r = get(edge.addr, LOBBY, &[("If-None-Match", "\"r1.4\"")])
        .await
        .unwrap();
    assert_eq!(
        (r.status, up.hits()),
        (304, 3),
        "forwarded; the node answered 304"
    );
    heartbeats.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protections() {
    let up = Upstream::start().await;
    let edge = Edge::start(
        EdgeConfig {
            header_timeout: Duration::from_millis(300),
            max_header_bytes: 2048,
            max_body_bytes: 100,
            max_conns_per_ip: 3,
            ..config(&up)
        },
        BusSource::None,
    )
    .await;

    // Keep-alive works through the protections.
    let mut sock = TcpStream::connect(edge.addr).await.unwrap();
    for _ in 0..3 {
        sock.write_all(
            format!("GET {LOBBY} HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"r1.3\"\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = [0u8; 1024];
        let n = sock.read(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 304"), "{text}");
    }

    // Header too large.
    let big = "b".repeat(4000);
    let r = get(edge.addr, LOBBY, &[("X-Big", &big)]).await.unwrap();
    assert_eq!(r.status, 431);
    assert!(r.body.contains(r#""error""#));

    // Body too large, from Content-Length, before any byte of it.
    let raw = format!(
        "POST {LOBBY} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 101\r\n\r\n"
    );
    let r = request(edge.addr, raw).await.unwrap();
    assert_eq!(r.status, 413);
    assert!(r.body.contains(r#""code":"too_large""#));
    // Chunked bodies are counted (the node sees the start of the request,
    // then the connection is cut: it never gets a whole body).
    let chunk = "a".repeat(80);
    let raw = format!(
        "POST {LOBBY} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n50\r\n{chunk}\r\n50\r\n{chunk}\r\n0\r\n\r\n"
    );
    let r = request(edge.addr, raw).await.unwrap();
    assert_eq!(r.status, 413);

    // A header that never ends.
    let mut slow = TcpStream::connect(edge.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), slow.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 408"),
        "{out:?}"
    );

    // Connections per address.
    let held: Vec<TcpStream> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(TcpStream::connect(edge.addr).await.unwrap());
        }
        v
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = get(edge.addr, LOBBY, &[]).await.unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    drop(held);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = get(edge.addr, LOBBY, &[]).await.unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_endpoints() {
    let up = Upstream::start().await;
    let edge = Edge::start(config(&up), BusSource::None).await;
    let r = get(edge.admin, "/healthz", &[]).await.unwrap();
    assert_eq!(r.status, 200);
    let r = get(edge.admin, "/readyz", &[]).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.contains(r#""upstreams_healthy":1"#), "{r:?}");
    assert!(r.body.contains(r#""bus":"off""#), "{r:?}");
    let r = get(edge.admin, "/metrics", &[]).await.unwrap();
    for name in [
        "chatty_edge_requests_total",
        "chatty_edge_map_entries",
        "chatty_edge_map_evictions_total",
        "chatty_edge_map_resets_total",
        "chatty_edge_bus_up",
        "chatty_edge_bus_last_message_age_seconds",
        "chatty_edge_upstreams_healthy",
        "chatty_edge_rejected_total",
    ] {
        assert!(r.body.contains(name), "{name} missing");
    }
}
