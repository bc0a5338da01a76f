//! Abuse: rate limits (the API's, seen through the edge) and the edge's
//! per-address connection cap, a flood of invented room names against the
//! edge's memory, 1,000 slowloris connections, oversized headers and bodies,
//! guest tokens used where they do not belong, and the secrets that guard the
//! site-admin and operator endpoints. Real processes on MariaDB and Redis.

use std::time::{Duration, Instant};

use chatty_tests::answer::{check, Answer, Expect, Expect::Status};
use chatty_tests::attack::{InventedRooms, Slow, Slowloris, CLIENT_TIMEOUT, SHED};
use chatty_tests::chat::{create_site, Guest};
use chatty_tests::host::{open_files_limit, rss_kib};
use chatty_tests::procs::ADMIN_TOKEN;
use chatty_tests::scrape::{api_requests, route_requests};
use chatty_tests::stack::{Stack, RATES_OFF};
use chatty_tests::{bounded, http, raw, wait_for};
use reqwest::RequestBuilder;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const RATE_LIMITED: Expect = Expect::Refused(429, "rate_limited");
const UNAUTHORIZED: Expect = Expect::Refused(401, "unauthorized");
const TOO_LARGE: Expect = Expect::Refused(413, "too_large");

/// A guest's `POST /v1/sites/{site}/rooms/{room}/messages` of `text` through
/// `base` (`site_room` is `site/room`), with `token` as its bearer token,
/// none when empty.
fn message(base: &str, site_room: &str, token: &str, text: &str, id: &str) -> RequestBuilder {
    let (site, room) = site_room.split_once('/').expect("site/room");
    let rb = http()
        .post(format!("{base}/v1/sites/{site}/rooms/{room}/messages"))
        .json(&json!({"text": text, "client_id": id}));
    if token.is_empty() {
        rb
    } else {
        rb.bearer_auth(token)
    }
}

// ---------------------------------------------------------------- rate limits

#[tokio::test]
async fn the_api_ip_rate_limit_answers_429_with_retry_after_through_the_edge() {
    let s = Stack::start(1, &["--ip-rate", "5/10s", "--guest-rate", "off"], &[]).await;
    bounded(Duration::from_secs(60), "ip rate limit", async {
        let join = || {
            http()
                .post(format!("{}/v1/sites/acme/rooms/hall/join", s.edge.base))
                .json(&json!({"nick": "ann"}))
        };
        for i in 0..5 {
            let answer = Answer::of(join()).await;
            answer.assert(Status(200), &format!("join {i} within the limit"));
        }
        // The 6th from one address.
        let refused = check(join(), RATE_LIMITED).await;
        // A sliding window: up to the rest of this window and a fifth of the
        // next (see the guest-rate test).
        let wait = refused.retry_after();
        assert!((1..=12).contains(&wait), "Retry-After {wait}");
        // A client cannot pick its address: the edge appends the peer's, and
        // the API counts the last hop.
        let forged = join().header("x-forwarded-for", "203.0.113.9");
        check(forged, RATE_LIMITED).await;
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
    let s = Stack::start(1, &["--ip-rate", "off", "--guest-rate", "3/10s"], &[]).await;
    bounded(Duration::from_secs(60), "guest rate limit", async {
        let a = Guest::join(&s.edge.base, "acme", "hall", "ann").await;
        let b = Guest::join(&s.edge.base, "acme", "hall", "bob").await;
        let send =
            |g: &Guest, id: &str| message(&s.edge.base, "acme/hall", &g.joined.token, "hi", id);
        for i in 0..3 {
            let answer = Answer::of(send(&a, &format!("a{i}"))).await;
            answer.assert(Status(201), &format!("send {i} within the limit"));
        }
        // The 4th of one guest.
        let refused = check(send(&a, "a3"), RATE_LIMITED).await;
        // A sliding window: a full window asks for the rest of it and then
        // a third of the next one, before the old hits weigh little enough.
        let wait = refused.retry_after();
        assert!((1..=14).contains(&wait), "Retry-After {wait}");
        // The limit is per guest: another guest still sends.
        check(send(&b, "b0"), Status(201)).await;
    })
    .await;
}

#[tokio::test]
async fn the_edge_refuses_connections_beyond_the_per_address_cap() {
    let s = Stack::start(1, RATES_OFF, &["--max-conns-per-ip", "20"]).await;
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
        let poll = raw::head("GET /v1/sites/acme/rooms/hall/messages HTTP/1.1", &[]);
        let answer = raw::exchange(&addr, poll, Duration::from_secs(2)).await;
        answer.assert(RATE_LIMITED, "the 21st connection");
        assert!(answer.header("retry-after").is_some(), "{answer}");
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
    let s = Stack::start(1, RATES_OFF, &["--ip-rate", "20/10s"]).await;
    bounded(Duration::from_secs(60), "edge request rate", async {
        // Each poll for another `after`, so that none is a page the edge
        // keeps: every one let through reaches the node.
        let poll = |after: usize| {
            http().get(format!(
                "{}/v1/sites/acme/rooms/hall/messages?after={after}",
                s.edge.base
            ))
        };
        let mut answers = Vec::new();
        for i in 0..30 {
            answers.push(Answer::of(poll(i)).await);
        }
        let ok = answers.iter().filter(|a| a.status == 200).count();
        assert_eq!(ok, 20, "requests within the limit pass");
        let polls_seen = || route_requests(s.api(), "messages_get");
        let api_before = polls_seen().await;
        assert_eq!(api_before, 20.0, "the node saw the polls let through");
        let refused = answers.pop().expect("30 answers");
        let wait = refused.retry_after();
        assert!((1..=20).contains(&wait), "Retry-After {wait}");
        refused.assert(RATE_LIMITED, "request over the edge's rate");
        // Refused at the edge: nothing more reached the node.
        for i in 30..35 {
            check(poll(i), Status(429)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_invented_rooms_a_second_keep_the_edge_memory_flat() {
    let _heavy = chatty_tests::heavy().await;
    // A cap a debug build can fill in a few seconds; the bound is the same
    // code at any size.
    const CAP: f64 = 2_000.0;
    const TARGET_PER_SEC: f64 = 10_000.0;
    const TASKS: usize = 200;
    const RSS_GROWTH_LIMIT_KIB: u64 = 32 * 1024;
    let s = Stack::start(2, RATES_OFF, &["--max-rooms", "2000", "--ip-rate", "off"]).await;
    bounded(Duration::from_secs(120), "invented rooms", async {
        let pid = s.edge.proc.pid();
        let flood = InventedRooms::start(&s.edge.base, TASKS, TARGET_PER_SEC);
        // Warm-up: the map fills to its cap (then every new room evicts one)
        // and the allocator settles.
        wait_for(Duration::from_secs(60), "the map full", || async {
            let entries = s.edge.metric("chatty_edge_map_entries").await;
            (entries >= 0.9 * CAP).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let warm_rss = rss_kib(pid);
        let warm_sent = flood.sent();
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
        let measured = flood.sent() - warm_sent;
        let secs = warm_at.elapsed().as_secs_f64();
        let evictions = s.edge.metric("chatty_edge_map_evictions_total").await - warm_evictions;
        let (sent, failures) = flood.stop().await;
        let end_rss = rss_kib(pid);
        let growth = max_rss.max(end_rss).saturating_sub(warm_rss);
        println!(
            "invented rooms: {measured} in {secs:.1} s after warm-up = {:.0}/s (target \
             {TARGET_PER_SEC}/s); edge RSS after warm-up {warm_rss} KiB, max {max_rss} KiB, \
             end {end_rss} KiB, growth {growth} KiB; map entries max {max_entries} (cap {CAP}), \
             {evictions} evictions while measured; {} of {sent} polls failed: {:?}",
            measured as f64 / secs,
            failures.len(),
            &failures[..failures.len().min(5)],
        );
        // An overloaded machine may time a client out, and an overloaded
        // node sheds load with 503 + Retry-After; nothing else may fail.
        let errors: Vec<_> = failures
            .iter()
            .filter(|f| !matches!(f.as_str(), CLIENT_TIMEOUT | SHED))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slowloris_connections_do_not_starve_real_clients() {
    let _heavy = chatty_tests::heavy().await;
    const SLOW: usize = 1000;
    let own_limit = open_files_limit("self");
    assert!(
        own_limit >= 3 * SLOW as u64,
        "open-files limit {own_limit} is too low for {SLOW} connections: raise it (`ulimit -n 4096`)"
    );
    let edge_extra = [
        "--header-timeout",
        "2s",
        "--max-conns-per-ip",
        "2000",
        "--ip-rate",
        "off",
    ];
    let s = Stack::start(1, RATES_OFF, &edge_extra).await;
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
        let attack = Slowloris::start(&s.edge_addr(), SLOW);
        wait_for(
            Duration::from_secs(10),
            "1,000 slow connections open",
            || {
                let n = attack.opened();
                async move { (n >= SLOW as u64).then_some(()) }
            },
        )
        .await;
        // Real clients, fresh connections each time, while the attack runs.
        let began = Instant::now();
        let mut worst = Duration::ZERO;
        let mut n = 0;
        while began.elapsed() < Duration::from_secs(6) {
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
        let mut closed = 0;
        let mut answered_408 = 0;
        let mut longest = Duration::ZERO;
        for seen in attack.stop().await {
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
    let s = Stack::start(1, RATES_OFF, &[]).await;
    bounded(Duration::from_secs(60), "oversized requests", async {
        let g = Guest::join(&s.edge.base, "acme", "hall", "ann").await;
        let addr = s.edge_addr();
        let api_before = api_requests(s.api()).await;

        // A 64 KiB header: 431 from the edge.
        let poll = "GET /v1/sites/acme/rooms/hall/messages?after=0 HTTP/1.1";
        let big = format!("X-Big: {}", "a".repeat(64 * 1024));
        let answer = raw::exchange(&addr, raw::head(poll, &[big]), Duration::from_secs(2)).await;
        let status = answer.status;
        assert!(status == 431 || status == 400, "64 KiB header: {status}");
        assert_eq!(
            s.edge
                .metric("chatty_edge_rejected_total{reason=\"header_too_large\"}")
                .await,
            1.0
        );

        // A 1 MiB body announced by Content-Length: 413 before a byte of it
        // is sent.
        let send = "POST /v1/sites/acme/rooms/hall/messages HTTP/1.1";
        let token = format!("Authorization: Bearer {}", g.joined.token);
        let json = "Content-Type: application/json".to_owned();
        let length = format!("Content-Length: {}", 1024 * 1024);
        let head = raw::head(send, &[token.clone(), json.clone(), length]);
        let t = Instant::now();
        let answer = raw::exchange(&addr, head, Duration::from_secs(2)).await;
        answer.assert(TOO_LARGE, "a 1 MiB Content-Length");
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
        let chunked = "Transfer-Encoding: chunked".to_owned();
        let mut req = raw::head(send, &[token.clone(), json.clone(), chunked.clone()]);
        req.extend(raw::chunked(&vec![b' '; 16 * 4096], 4096));
        let answer = raw::exchange(&addr, req, Duration::from_secs(3)).await;
        answer.assert(TOO_LARGE, "a chunked body past the limit");
        assert_eq!(
            s.edge
                .metric("chatty_edge_rejected_total{reason=\"body_too_large\"}")
                .await,
            2.0
        );

        // The API on its own refuses a 17 KiB JSON body with a JSON 413.
        let text = "x".repeat(17 * 1024);
        let to_api = message(&s.api().base, "acme/hall", &g.joined.token, &text, "big");
        check(to_api, TOO_LARGE).await;
        // And a chunked one (no Content-Length) too.
        let body = json!({"text": text, "client_id": "big2"}).to_string();
        let mut req = raw::head(send, &[token, json, chunked]);
        req.extend(raw::chunked(body.as_bytes(), 1024));
        let api_addr = format!("127.0.0.1:{}", s.api().port);
        let answer = raw::exchange(&api_addr, req, Duration::from_secs(3)).await;
        answer.assert(TOO_LARGE, "a chunked 17 KiB body to the API");
    })
    .await;
}

// -------------------------------------------------------------------- tokens

#[tokio::test]
async fn guest_tokens_are_refused_outside_their_room_and_when_forged() {
    let s = Stack::start(1, RATES_OFF, &[]).await;
    bounded(Duration::from_secs(60), "tokens", async {
        create_site(&s.api().base, "other").await;
        let g = Guest::join(&s.edge.base, "acme", "hall", "ann").await;
        let token = g.joined.token.clone();
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
            let send =
                |site_room: &str, token: &str, id: &str| message(base, site_room, token, "hi", id);
            let post = |room: &str, action: &str| {
                let url = format!("{base}/v1/sites/acme/rooms/{room}/{action}");
                http().post(url).bearer_auth(&token)
            };
            let heartbeat = |room: &str| post(room, "heartbeat");
            let join = |room: &str| post(room, "join").json(&json!({"nick": "ann"}));
            check(send("acme/kitchen", &token, "x1"), UNAUTHORIZED).await; // another room's token
            check(send("other/hall", &token, "x2"), UNAUTHORIZED).await; // another site's token
            check(send("acme/hall", &forged, "x3"), UNAUTHORIZED).await; // a forged signature
            check(send("acme/hall", &unsigned, "x4"), UNAUTHORIZED).await; // no signature
            check(send("acme/hall", "", "x5"), UNAUTHORIZED).await; // no token
            check(heartbeat("kitchen"), UNAUTHORIZED).await; // a heartbeat, another room's token
            check(join("kitchen"), UNAUTHORIZED).await; // a join with another room's token
        }
        // The token works where it belongs.
        let ok = message(&s.edge.base, "acme/hall", &token, "hi", "ok");
        check(ok, Status(201)).await;
    })
    .await;
}

// ---------------------------------------------------------------- admin

#[tokio::test]
async fn admin_endpoints_need_the_site_secret_and_operator_endpoints_the_operator_token() {
    let s = Stack::start(1, RATES_OFF, &[]).await;
    bounded(Duration::from_secs(60), "admin secrets", async {
        let other_secret = create_site(&s.api().base, "other").await;
        let g = Guest::join(&s.edge.base, "acme", "hall", "ann").await;
        let sent = g.send("rude", "c1").await;
        let base = &s.edge.base;
        let with = |rb: RequestBuilder, secret: Option<&str>| match secret {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        };
        let delete_url = format!("{base}/v1/sites/acme/rooms/hall/messages/{}", sent.seq);
        let bans_url = format!("{base}/v1/sites/acme/bans");
        let limits_url = format!("{base}/v1/sites/acme/limits");
        let ban_body = json!({"member_id": g.joined.member.id});
        let limits = json!({"max_text_bytes": 500, "guest_messages": 2, "guest_window_secs": 60});
        let delete = |secret| with(http().delete(&delete_url), secret);
        let ban = |secret| with(http().post(&bans_url).json(&ban_body), secret);
        let set_limits = |secret| with(http().put(&limits_url).json(&limits), secret);

        // No secret, another site's, the operator's token: none is acme's.
        for secret in [None, Some(other_secret.as_str()), Some(ADMIN_TOKEN)] {
            check(delete(secret), UNAUTHORIZED).await;
            check(ban(secret), UNAUTHORIZED).await;
            check(set_limits(secret), UNAUTHORIZED).await;
        }
        // Nothing happened: the message is still there, the guest still sends.
        g.send("still here", "c2").await;

        // With the right secret.
        let site = Some(s.secret.as_str());
        let ev = check(delete(site), Status(200)).await.json();
        assert_eq!(ev["kind"], "deletion");
        assert_eq!(ev["deletes"], sent.seq);
        let set = check(set_limits(site), Status(200)).await;
        assert_eq!(set.json(), limits);
        check(ban(site), Status(204)).await;
        let banned = message(base, "acme/hall", &g.joined.token, "hi", "c3");
        check(banned, Expect::Refused(403, "banned")).await;
        // The site's own flood limit (2 per minute) applies to a new guest.
        let h = Guest::join(base, "acme", "hall", "bob").await;
        h.send("one", "h1").await;
        h.send("two", "h2").await;
        let third = message(base, "acme/hall", &h.joined.token, "three", "h3"); // over the limit
        let refused = check(third, RATE_LIMITED).await;
        assert!(refused.header("retry-after").is_some(), "{refused}");

        // Operator endpoints: the operator token only.
        let sites_url = format!("{base}/v1/admin/sites");
        let new_site = json!({"id": "newco", "origins": ["https://newco.example"]});
        let create = |secret| with(http().post(&sites_url).json(&new_site), secret);
        let list = |secret| with(http().get(&sites_url), secret);
        // No token, or a site's secret.
        for secret in [None, site] {
            check(create(secret), UNAUTHORIZED).await;
            check(list(secret), UNAUTHORIZED).await;
        }
        check(create(Some(ADMIN_TOKEN)), Status(201)).await;
        let sites = check(list(Some(ADMIN_TOKEN)), Status(200)).await.json();
        assert_eq!(sites.as_array().map(Vec::len), Some(3), "{sites}");
    })
    .await;
}
