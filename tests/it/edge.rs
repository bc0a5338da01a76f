//! The edge in front of two real chat-api nodes on MariaDB and a private
//! Redis: 304 from memory with every API node frozen, bumps over the bus,
//! a node killed under load, Redis killed and restarted, invented rooms,
//! two edges on one bus, and polls held at the edge (`Prefer: wait`).

use std::time::{Duration, Instant};

use chatty::client::Poll;
use chatty_tests::attack::{poll_failure, SHED};
use chatty_tests::chat::{client, Guest, Reader};
use chatty_tests::edge_polls::{held_poll, hold, learn, next_page, until_held};
use chatty_tests::procs::Edge;
use chatty_tests::stack::{edge_opts, TwoNodes};
use chatty_tests::wait_for;

#[tokio::test]
async fn answers_304_from_memory_with_every_api_node_frozen() {
    let s = TwoNodes::start(&[], &[]).await;
    let g = Guest::join(&s.edge.base, "acme", "hall", "ada").await;
    g.send("hi", "c1").await;
    let (etag, seq) = learn(&s.edge.base, "hall").await;
    s.a.proc.signal("STOP");
    s.b.proc.signal("STOP");
    let c = client(&s.edge.base, "acme");
    for _ in 0..20 {
        let mut held = etag.clone();
        match c.poll("hall", seq, &mut held).await {
            Ok(Poll::NotModified) => assert_eq!(held, etag),
            other => panic!("expected 304 from the edge's memory, got {other:?}"),
        }
    }
    s.a.proc.signal("CONT");
    s.b.proc.signal("CONT");
    assert!(
        s.edge
            .metric("chatty_edge_requests_total{outcome=\"short_circuit\"}")
            .await
            >= 20.0
    );
}

#[tokio::test]
async fn a_send_to_one_node_reaches_an_edge_poller_within_200ms() {
    let s = TwoNodes::start(&[], &[]).await;
    let g = Guest::join(&s.b.base, "acme", "hall", "ada").await;
    g.send("first", "c1").await;
    let (etag, seq) = learn(&s.edge.base, "hall").await;
    let c = client(&s.edge.base, "acme");
    let sent = g.send("second", "c2").await;
    let acked = Instant::now();
    let (limit, every) = (Duration::from_millis(200), Duration::from_millis(5));
    let page = next_page(&c, ("hall", seq, &etag), acked, limit, every)
        .await
        .unwrap_or_else(|t| panic!("stale 304 for {t:?}"));
    assert_eq!(page.events[0].seq, sent.seq);
}

#[tokio::test]
async fn a_message_to_twenty_readers_costs_the_api_one_poll() {
    let s = TwoNodes::start(&[], &[]).await;
    let g = Guest::join(&s.edge.base, "acme", "hall", "ada").await;
    g.send("first", "c1").await;
    let (etag, seq) = learn(&s.edge.base, "hall").await;
    let sent = g.send("second", "c2").await;
    let c = client(&s.edge.base, "acme");
    // The edge hears of the send (the bus, or the send it forwarded).
    wait_for(Duration::from_secs(5), "the edge to learn the send", || {
        let c = c.clone();
        let etag = etag.clone();
        async move {
            let mut held = etag;
            matches!(c.poll("hall", seq, &mut held).await.ok()?, Poll::Page(_)).then_some(())
        }
    })
    .await;
    let before = s.pages_served().await;
    for reader in 0..20 {
        let mut held = etag.clone();
        match c.poll("hall", seq, &mut held).await.expect("poll") {
            Poll::Page(page) => {
                let seqs: Vec<u64> = page.events.iter().map(|e| e.seq).collect();
                assert_eq!(seqs, vec![sent.seq], "reader {reader}");
                assert_ne!(held, etag, "reader {reader} got the new ETag");
            }
            Poll::NotModified => panic!("reader {reader}: a stale 304"),
        }
    }
    let after = s.pages_served().await;
    assert_eq!(
        after, before,
        "every reader was answered from the page cache"
    );
    assert!(
        s.edge
            .metric("chatty_edge_requests_total{outcome=\"cached\"}")
            .await
            >= 20.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_api_node_costs_nothing_after_two_seconds() {
    let mut s = TwoNodes::start(&[], &[]).await;
    let g = Guest::join(&s.edge.base, "acme", "hall", "ada").await;
    let c = client(&s.edge.base, "acme");
    let mut acked = Vec::new();
    let mut reader = Reader::new();
    let start = Instant::now();
    let mut killed_at = None;
    let mut late_failures = Vec::new();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(6) {
        if killed_at.is_none() && start.elapsed() > Duration::from_secs(1) {
            s.a.proc.kill();
            killed_at = Some(Instant::now());
        }
        let late = killed_at.is_some_and(|t| t.elapsed() > Duration::from_secs(2));
        n += 1;
        let id = format!("k{n}");
        // A send whose answer is lost is retried with the same client_id,
        // as every client does.
        let mut result = g
            .client
            .send("hall", &g.joined.token, &format!("m{n}"), &id)
            .await;
        if result.is_err() && !late {
            result = g
                .client
                .send("hall", &g.joined.token, &format!("m{n}"), &id)
                .await;
        }
        match result {
            Ok(e) => acked.push(e.seq),
            Err(e) if late => late_failures.push(format!("send: {e}")),
            Err(_) => {}
        }
        match reader.poll(&c, "hall").await {
            Ok(_) => {}
            Err(e) if late => late_failures.push(format!("poll: {e}")),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        late_failures.is_empty(),
        "failures 2 s after the kill: {late_failures:?}"
    );
    reader.poll(&c, "hall").await.expect("final poll");
    reader.assert_gapless();
    let seen: std::collections::HashSet<u64> = reader.events.iter().map(|e| e.seq).collect();
    let lost: Vec<_> = acked.iter().filter(|s| !seen.contains(s)).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert!(
        acked.len() > 50,
        "too few sends went through: {}",
        acked.len()
    );
}

#[tokio::test]
async fn redis_killed_and_restarted_bounds_staleness_and_resumes() {
    let mut s = TwoNodes::start(&[], &["--max-age", "2s"]).await;
    let g = Guest::join(&s.a.base, "acme", "hall", "ada").await;
    g.send("first", "c1").await;
    let (etag, seq) = learn(&s.edge.base, "hall").await;
    s.redis.kill();
    let sent = g.send("while redis is down", "c2").await;
    let acked = Instant::now();
    let c = client(&s.edge.base, "acme");
    let (limit, every) = (Duration::from_secs(3), Duration::from_millis(20));
    let page = next_page(&c, ("hall", seq, &etag), acked, limit, every)
        .await
        .unwrap_or_else(|_| panic!("stale beyond max-age + 1 s"));
    assert_eq!(page.events[0].seq, sent.seq);
    s.redis.restart().await;
    wait_for(
        Duration::from_secs(10),
        "the edge's bus back up",
        || async { (s.edge.metric("chatty_edge_bus_up").await == 1.0).then_some(()) },
    )
    .await;
    // Short-circuiting resumes: polls with the current ETag stop reaching the API.
    let (etag, seq) = learn(&s.edge.base, "hall").await;
    let before = s.pages_served().await;
    for _ in 0..50 {
        assert!(matches!(
            c.poll("hall", seq, &mut etag.clone()).await,
            Ok(Poll::NotModified)
        ));
    }
    let after = s.pages_served().await;
    assert!(
        after - before <= 2.0,
        "{} polls reached the API",
        after - before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invented_rooms_stay_within_the_cap_and_are_forwarded() {
    let _heavy = chatty_tests::heavy().await;
    const CAP: u64 = 1000;
    const POLLS: usize = 100_000;
    // One address sends all of it: lift the edge's per-address rate.
    let s = TwoNodes::start(&[], &["--max-rooms", "1000", "--ip-rate", "off"]).await;
    let before = s
        .edge
        .metric("chatty_edge_requests_total{outcome=\"short_circuit\"}")
        .await;
    let http = reqwest::Client::new();
    let base = s.edge.base.clone();
    let mut tasks = Vec::new();
    for t in 0..50 {
        let http = http.clone();
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let mut forwarded = 0;
            for i in (t..POLLS).step_by(50) {
                let r = http
                    .get(format!(
                        "{base}/v1/sites/acme/rooms/invented-{i}/messages?after=0"
                    ))
                    .header("if-none-match", "\"r0.0\"")
                    .send()
                    .await;
                // An unknown room is never answered from memory: the API
                // (which has no such room either) answers, or sheds the
                // flood with its own 503 on a loaded machine.
                match poll_failure(r).await {
                    None => {}
                    Some(f) => assert_eq!(f, SHED, "poll of invented-{i}"),
                }
                forwarded += 1;
            }
            forwarded
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("poller");
    }
    assert_eq!(total, POLLS);
    let entries = s.edge.metric("chatty_edge_map_entries").await;
    assert!(
        entries <= CAP as f64,
        "map holds {entries} entries, cap {CAP}"
    );
    assert!(s.edge.metric("chatty_edge_map_evictions_total").await > 0.0);
    let after = s
        .edge
        .metric("chatty_edge_requests_total{outcome=\"short_circuit\"}")
        .await;
    assert_eq!(after, before, "an invented room was answered from memory");
    let forwarded = s
        .edge
        .metric("chatty_edge_requests_total{outcome=\"forwarded\"}")
        .await;
    assert!(forwarded >= POLLS as f64);
}

#[tokio::test]
async fn a_send_through_one_edge_is_seen_through_another_within_200ms() {
    let s = TwoNodes::start(&[], &[]).await;
    let edge2 = Edge::start(edge_opts([&s.a, &s.b], &s.redis.url(), &s.prefix, &[])).await;
    let g = Guest::join(&s.edge.base, "acme", "hall", "ada").await;
    g.send("first", "c1").await;
    let (etag, seq) = learn(&edge2.base, "hall").await;
    let sent = g.send("second", "c2").await;
    let acked = Instant::now();
    let c = client(&edge2.base, "acme");
    let (limit, every) = (Duration::from_millis(200), Duration::from_millis(5));
    let page = next_page(&c, ("hall", seq, &etag), acked, limit, every)
        .await
        .unwrap_or_else(|t| panic!("edge 2 stale for {t:?}"));
    assert_eq!(page.events[0].seq, sent.seq);
}

#[tokio::test]
async fn a_held_poll_gets_a_message_sent_through_a_node_at_once() {
    let s = TwoNodes::start(&[], &[]).await;
    let g = Guest::join(&s.b.base, "acme", "hall", "ada").await;
    g.send("first", "c1").await;
    let (etag, seq) = learn(&s.edge.base, "hall").await;
    let held = hold(&s.edge, "hall", 1, (seq, &etag), 10).await;
    let sent = g.send("second", "c2").await;
    let acked = Instant::now();
    let h = held
        .into_iter()
        .next()
        .expect("one")
        .await
        .expect("held poll");
    let since_ack = acked.elapsed();
    assert_eq!(h.status, 200, "{}", h.body);
    assert!(
        since_ack < Duration::from_secs(2),
        "answered {since_ack:?} after the send"
    );
    assert!(h.took < Duration::from_secs(9), "held {:?}", h.took);
    assert_eq!(h.seqs(), [sent.seq]);
    assert_ne!(h.etag.as_deref(), Some(etag.as_str()));
    assert_eq!(h.applied.as_deref(), Some("wait=10"));
    until_held(&s.edge, 0.0).await;
}

#[tokio::test]
async fn a_held_poll_of_a_quiet_room_gets_304_when_its_wait_ends() {
    let s = TwoNodes::start(&[], &[]).await;
    let g = Guest::join(&s.edge.base, "acme", "hall", "ada").await;
    g.send("first", "c1").await;
    let (etag, seq) = learn(&s.edge.base, "hall").await;
    let before = s.pages_served().await;
    let h = held_poll(&s.edge.base, ("hall", seq, &etag), 1).await;
    assert_eq!(h.status, 304);
    assert_eq!(h.etag.as_deref(), Some(etag.as_str()));
    assert_eq!(h.applied.as_deref(), Some("wait=1"));
    assert!(
        h.took >= Duration::from_millis(900),
        "held only {:?}",
        h.took
    );
    assert!(h.took < Duration::from_secs(3), "held {:?}", h.took);
    assert_eq!(s.pages_served().await, before, "no API request while held");
    assert!(
        s.edge
            .metric("chatty_edge_held_releases_total{reason=\"timeout\"}")
            .await
            >= 1.0
    );
}
