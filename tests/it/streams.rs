//! Push from the edge with two real chat-api nodes on MariaDB and a private
//! Redis: held polls and event streams get a message sent through another
//! node at once, many parked guests cost one upstream fetch per message,
//! Redis cut while guests are parked, SIGTERM, a stream resumed after a
//! node is killed, and presence reported by the edge instead of heartbeats.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chatty_tests::chat::Guest;
use chatty_tests::edge_polls::{hold, learn};
use chatty_tests::procs::Edge;
use chatty_tests::scrape::route_requests;
use chatty_tests::sse::{Ask, Sse, Stream};
use chatty_tests::stack::TwoNodes;
use chatty_tests::wait_for;

const LONG: Duration = Duration::from_secs(10);

/// A stream of `hall` after `after`, read up to its first members event:
/// the edge has it parked from then on.
async fn parked_stream(edge: &Edge, room: &str, after: u64, token: Option<&str>) -> Stream {
    parked_stream_seeing(edge, room, after, token).await.0
}

/// As [`parked_stream`], with the seqs of the log events read on the way.
async fn parked_stream_seeing(
    edge: &Edge,
    room: &str,
    after: u64,
    token: Option<&str>,
) -> (Stream, Vec<u64>) {
    let ask = Ask {
        after: Some(after),
        token,
        ..Ask::default()
    };
    let mut s = Stream::open(&edge.base, ("acme", room), ask).await;
    assert_eq!(
        (s.status, s.content_type.as_str()),
        (200, "text/event-stream")
    );
    let mut seen = Vec::new();
    loop {
        match s.next(LONG).await.expect("a stream stays open") {
            Sse::Members(_) => return (s, seen),
            Sse::Log(e) => {
                assert!(e.seq > after, "seq {} not after {after}", e.seq);
                seen.push(e.seq);
            }
            Sse::Retry(_) | Sse::Comment(_) => {}
        }
    }
}

async fn until_streams(edge: &Edge, n: f64) {
    wait_for(
        Duration::from_secs(5),
        "streams open at the edge",
        || async { (edge.metric("chatty_edge_open_streams").await == n).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_send_through_node_b_reaches_a_held_poll_and_a_stream_at_once() {
    let _heavy = chatty_tests::heavy().await;
    const ROUNDS: usize = 5;
    let s = TwoNodes::start(&[], &[]).await;
    let g = Guest::join(&s.b.base, "acme", "hall", "ada").await;
    g.send("first", "c1").await;
    let (mut etag, mut seq) = learn(&s.edge.base, "hall").await;
    let mut stream = parked_stream(&s.edge, "hall", seq, None).await;
    let (mut to_poll, mut to_stream) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let held = hold(&s.edge, "hall", 1, (seq, &etag), 10).await;
        let sent = g.send(&format!("m{round}"), &format!("r{round}")).await;
        let acked = Instant::now();
        let event = stream.next_log(LONG).await.expect("the stream's event");
        to_stream.push(acked.elapsed());
        let h = held.into_iter().next().expect("one").await.expect("held");
        to_poll.push(acked.elapsed());
        assert_eq!((h.status, h.seqs()), (200, vec![sent.seq]), "{}", h.body);
        assert_eq!(event.seq, sent.seq);
        (etag, seq) = (h.etag.expect("an ETag"), sent.seq);
    }
    // Each is measured from the acknowledgement, after the other was
    // read: the median says what a guest sees, the worst bounds a stall.
    for (what, mut took) in [("held poll", to_poll), ("stream", to_stream)] {
        took.sort();
        let median = took[ROUNDS / 2];
        assert!(
            median <= Duration::from_millis(100),
            "{what}: median {median:?} of {took:?}"
        );
        assert!(
            took[ROUNDS - 1] < Duration::from_secs(1),
            "{what}: {took:?}"
        );
    }
    let pushed = s.edge.metric("chatty_edge_push_seconds_count").await;
    assert!(
        pushed >= 2.0 * ROUNDS as f64,
        "push latency counted: {pushed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_parked_guests_cost_one_upstream_fetch_per_message() {
    let _heavy = chatty_tests::heavy().await;
    // A long max-age: no guest is let go early to re-confirm the room's
    // version while the test counts fetches (Redis stays up).
    let s = &TwoNodes::start(&[], &["--max-age", "30s"]).await;
    let (fetches, answers) = undisturbed(s, "hall", |room| async move {
        parked_guests_cost(s, &room).await
    })
    .await;
    assert_eq!(
        answers.len(),
        1,
        "every guest got the same page: {answers:?}"
    );
    assert!(
        answers.iter().all(|a| a.starts_with("200 the message:")),
        "{answers:?}"
    );
    assert_eq!(fetches, [1.0, 1.0], "upstream fetches for the two messages");
}

/// `attempt` in up to three rooms named after `prefix`, until one runs
/// while the edge keeps its map: the counts hold while it trusts its map,
/// and a bus that falls silent for a second (a starved machine) makes the
/// edge forget every version and ask the nodes again, as it must. Such an
/// attempt proves nothing either way.
async fn undisturbed<T, F>(s: &TwoNodes, prefix: &str, attempt: impl Fn(String) -> F) -> T
where
    T: std::fmt::Debug,
    F: std::future::Future<Output = T>,
{
    let mut disturbed = Vec::new();
    for i in 0..3 {
        let resets = s.edge.metric("chatty_edge_map_resets_total").await;
        let out = attempt(format!("{prefix}{i}")).await;
        if s.edge.metric("chatty_edge_map_resets_total").await == resets {
            return out;
        }
        disturbed.push(out);
    }
    panic!("the edge forgot its map during every attempt: {disturbed:?}");
}

/// 150 held polls and 50 streams parked in `room`, then two messages: the
/// upstream fetches each one cost (the first wakes all 200, the second
/// only the streams), and the distinct answers of the held polls.
async fn parked_guests_cost(s: &TwoNodes, room: &str) -> ([f64; 2], HashSet<String>) {
    const POLLS: usize = 150;
    const STREAMS: usize = 50;
    let g = Guest::join(&s.b.base, "acme", room, "ada").await;
    g.send("first", "c1").await;
    let (etag, seq) = learn(&s.edge.base, room).await;
    // The streams of an earlier attempt are gone.
    until_streams(&s.edge, 0.0).await;
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        streams.push(parked_stream(&s.edge, room, seq, None).await);
    }
    let mut held = hold(&s.edge, room, POLLS, (seq, &etag), 10).await;
    until_streams(&s.edge, STREAMS as f64).await;
    let mut fetches = [0.0; 2];
    let mut answers = HashSet::new();
    for (round, fetched) in fetches.iter_mut().enumerate() {
        let before = s.pages_served().await;
        let sent = g.send(&format!("m{round}"), &format!("r{round}")).await;
        if round == 0 {
            for h in held.drain(..) {
                let h = h.await.expect("held poll");
                let seqs = match h.seqs() == vec![sent.seq] {
                    true => "the message",
                    false => "not the message",
                };
                answers.insert(format!("{} {seqs}: {}", h.status, h.body));
            }
        }
        for stream in &mut streams {
            let e = stream.next_log(LONG).await.expect("the stream's event");
            assert_eq!(e.seq, sent.seq);
        }
        // The node counts a request once its answer is written.
        tokio::time::sleep(Duration::from_millis(200)).await;
        *fetched = s.pages_served().await - before;
    }
    (fetches, answers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_at_different_places_in_a_room_cost_one_upstream_fetch_per_message() {
    let _heavy = chatty_tests::heavy().await;
    let s = &TwoNodes::start(&[], &["--max-age", "30s"]).await;
    let fetches = undisturbed(s, "tail", |room| async move {
        staggered_streams_cost(s, &room).await
    })
    .await;
    assert_eq!(fetches, [1.0, 1.0], "upstream fetches for the two messages");
}

/// 40 streams parked in `room`, each a few messages behind another (as in
/// a busy room, where some are still writing the last message when the
/// next comes), then two messages: the upstream fetches each one cost.
/// Every stream gets every message after its place, once, in order.
async fn staggered_streams_cost(s: &TwoNodes, room: &str) -> [f64; 2] {
    const STREAMS: u64 = 40;
    const SPREAD: u64 = 5;
    let g = Guest::join(&s.b.base, "acme", room, "ada").await;
    for i in 0..SPREAD {
        g.send(&format!("before {i}"), &format!("b{i}")).await;
    }
    let (_, seq) = learn(&s.edge.base, room).await;
    until_streams(&s.edge, 0.0).await;
    let mut streams = Vec::new();
    for i in 0..STREAMS {
        let after = seq - i % SPREAD;
        let (stream, seen) = parked_stream_seeing(&s.edge, room, after, None).await;
        // What it missed, up to the room's version, in order.
        assert_eq!(seen, (after + 1..=seq).collect::<Vec<_>>());
        streams.push(stream);
    }
    until_streams(&s.edge, STREAMS as f64).await;
    let mut fetches = [0.0; 2];
    for (round, fetched) in fetches.iter_mut().enumerate() {
        let before = s.pages_served().await;
        let sent = g.send(&format!("m{round}"), &format!("r{round}")).await;
        for stream in &mut streams {
            let e = stream.next_log(LONG).await.expect("the stream's event");
            assert_eq!(e.seq, sent.seq);
        }
        // The node counts a request once its answer is written.
        tokio::time::sleep(Duration::from_millis(200)).await;
        *fetched = s.pages_served().await - before;
    }
    fetches
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cut_while_guests_are_parked_releases_them_within_max_age_and_loses_nothing() {
    let _heavy = chatty_tests::heavy().await;
    let mut s = TwoNodes::start(&[], &["--max-age", "2s"]).await;
    let g = Guest::join(&s.a.base, "acme", "hall", "ada").await;
    g.send("first", "c1").await;
    let (etag, seq) = learn(&s.edge.base, "hall").await;
    let mut stream = parked_stream(&s.edge, "hall", seq, None).await;
    let held = hold(&s.edge, "hall", 10, (seq, &etag), 30).await;
    s.redis.kill();
    let cut = Instant::now();
    // Without the bus the edge cannot vouch for the room past max-age:
    // every held poll is let go (304, or forwarded) within it.
    for h in held {
        let h = h.await.expect("held poll");
        assert!(matches!(h.status, 200 | 304), "{} {}", h.status, h.body);
    }
    let released = cut.elapsed();
    assert!(
        released < Duration::from_secs(4),
        "released {released:?} after the cut"
    );
    let sent = g.send("while redis is down", "c2").await;
    let e = stream
        .next_log(LONG)
        .await
        .expect("the stream reads a node itself");
    assert_eq!(e.seq, sent.seq);
    s.redis.restart().await;
    wait_for(LONG, "the edge's bus back up", || async {
        (s.edge.metric("chatty_edge_bus_up").await == 1.0).then_some(())
    })
    .await;
    let after = g.send("redis is back", "c3").await;
    let e = stream
        .next_log(LONG)
        .await
        .expect("the event after the cut");
    assert_eq!(e.seq, after.seq, "no gap and no duplicate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_releases_held_polls_and_ends_streams_with_a_retry_hint_at_once() {
    let _heavy = chatty_tests::heavy().await;
    const GUESTS: usize = 10;
    // Requests in flight get the drain (9 s); parked guests are let go now.
    let s = TwoNodes::start(&[], &["--drain-timeout", "10s"]).await;
    let g = Guest::join(&s.edge.base, "acme", "hall", "ada").await;
    g.send("first", "c1").await;
    let (etag, seq) = learn(&s.edge.base, "hall").await;
    let mut streams = Vec::new();
    for _ in 0..GUESTS {
        streams.push(parked_stream(&s.edge, "hall", seq, None).await);
    }
    let held = hold(&s.edge, "hall", GUESTS, (seq, &etag), 30).await;
    let stopped = Instant::now();
    s.edge.proc.signal("TERM");
    for h in held {
        let h = h.await.expect("held poll");
        assert_eq!(h.status, 304);
        assert_eq!(h.etag.as_deref(), Some(etag.as_str()));
    }
    for stream in &mut streams {
        let rest = stream.rest(LONG).await;
        assert!(
            matches!(rest.last(), Some(Sse::Retry(ms)) if *ms <= 1000),
            "ends with a retry hint: {rest:?}"
        );
    }
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "let go {took:?} after SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_resumed_with_last_event_id_after_a_node_is_killed_sees_every_message_once() {
    let _heavy = chatty_tests::heavy().await;
    let mut s = TwoNodes::start(&[], &[]).await;
    let g = Guest::join(&s.a.base, "acme", "hall", "ada").await;
    let mut seen = Vec::new();
    let mut sent = Vec::new();
    let mut stream = parked_stream(&s.edge, "hall", 0, None).await;
    for n in 0..20 {
        if n == 10 {
            // The stream's connection goes with the edge's fetches to B.
            s.b.proc.kill();
            let last = *seen.last().expect("events before the kill");
            stream = Stream::open(
                &s.edge.base,
                ("acme", "hall"),
                Ask {
                    after: Some(0),
                    last_event_id: Some(last),
                    ..Ask::default()
                },
            )
            .await;
        }
        sent.push(g.send(&format!("m{n}"), &format!("c{n}")).await.seq);
        let e = stream.next_log(LONG).await.expect("an event");
        seen.push(e.seq);
    }
    assert_eq!(seen, sent, "every message once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streaming_guests_stay_present_without_heartbeats_and_leave_after_the_grace() {
    let _heavy = chatty_tests::heavy().await;
    let s = TwoNodes::start(&["--presence-ttl", "3s"], &["--presence-every", "1s"]).await;
    let ada = Guest::join(&s.a.base, "acme", "hall", "ada").await;
    let bob = Guest::join(&s.a.base, "acme", "hall", "bob").await;
    let mut ada_stream = parked_stream(&s.edge, "hall", 0, Some(&ada.joined.token)).await;
    let bob_stream = parked_stream(&s.edge, "hall", 0, Some(&bob.joined.token)).await;
    // Three presence ttls with no heartbeat: both are still listed.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let nicks = |m: &chatty_shared::wire::MembersList| {
        let mut n: Vec<String> = m.members.iter().map(|m| m.nick.clone()).collect();
        n.sort();
        n
    };
    let members: chatty_shared::wire::MembersList =
        reqwest::get(format!("{}/v1/sites/acme/rooms/hall/members", s.a.base))
            .await
            .expect("members")
            .json()
            .await
            .expect("a members list");
    assert_eq!(nicks(&members), ["ada", "bob"]);
    // Kept present across three ttls takes a report at least every ttl
    // (one a second is asked; a loaded machine may fail a few).
    let reported = s
        .edge
        .metric("chatty_edge_presence_batches_total{outcome=\"ok\"}")
        .await;
    assert!(reported >= 3.0, "{reported} presence reports in 9 s");
    assert_eq!(route_requests(&s.a, "heartbeat").await, 0.0);
    assert_eq!(route_requests(&s.b, "heartbeat").await, 0.0);
    // Bob closes his stream: he leaves after the grace, and ada's stream
    // hears it.
    drop(bob_stream);
    let closed = Instant::now();
    loop {
        match ada_stream.next(LONG).await.expect("ada's stream") {
            Sse::Members(m) if nicks(&m) == ["ada"] => break,
            _ => {}
        }
    }
    let left = closed.elapsed();
    assert!(
        left < Duration::from_secs(9),
        "bob left {left:?} after closing"
    );
    // The route the edge reports on is not reachable through the edge.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/internal/presence", s.edge.base))
        .body("{}")
        .send()
        .await
        .expect("internal route through the edge");
    assert_eq!(resp.status().as_u16(), 404);
}
