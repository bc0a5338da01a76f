//! Redis behind Sentinel: two API nodes and an edge on a `redis-sentinel://`
//! URL (a private primary, one replica, three Sentinels), under
//! `chatty load --check`; the primary is killed (SIGKILL) in the middle of
//! the run. Sends go on while the Sentinels promote the replica, every
//! client follows the promotion by itself, the edge forgets its map when
//! the bus drops and answers 304s again once it has relearned, and the
//! checker finds nothing lost or duplicated. Prints a figures line
//! (`FAULT {...}`). A graceful failover (`SENTINEL FAILOVER`, the old
//! primary demoted while running) is followed the same way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatty_tests::chat::{client, create_site, Guest, Reader};
use chatty_tests::load::Load;
use chatty_tests::procs::{ApiNode, Edge};
use chatty_tests::sentinel::{command, SentinelRedis};
use chatty_tests::services::FreshDb;
use chatty_tests::stack::{edge_opts, node_opts, RATES_OFF};
use chatty_tests::{unique, wait_for};

/// The edge's max-age in this test.
const MAX_AGE: Duration = Duration::from_secs(2);
/// The load's poll interval (the widget's).
const POLL: Duration = Duration::from_secs(2);
/// How long the load runs; the primary is killed after `FAULT_AT`.
const RUN: Duration = Duration::from_secs(20);
const FAULT_AT: Duration = Duration::from_secs(6);
/// How often the probe sends while the primary is away.
const PROBE_EVERY: Duration = Duration::from_millis(100);

/// What the probe saw of sends while Redis failed over.
#[derive(Debug, Default)]
struct Probe {
    sent: u64,
    failed: u64,
    /// The longest time between two acknowledged sends.
    longest_gap: Duration,
}

/// Sends through the edge every [`PROBE_EVERY`] until `stop`.
async fn probe(guest: Guest, stop: Arc<AtomicBool>) -> Probe {
    let mut p = Probe::default();
    let mut last_ok = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let id = format!("probe-{n}");
        match guest
            .client
            .send(&guest.room, &guest.joined.token, "probe", &id)
            .await
        {
            Ok(_) => {
                p.sent += 1;
                p.longest_gap = p.longest_gap.max(last_ok.elapsed());
                last_ok = Instant::now();
            }
            Err(_) => p.failed += 1,
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
    p.longest_gap = p.longest_gap.max(last_ok.elapsed());
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_killed_under_load_fails_over() {
    let _heavy = chatty_tests::heavy().await;
    let mut redis = SentinelRedis::start().await;
    let url = redis.url();
    let db = FreshDb::create().await;
    let prefix = unique("s").chars().take(10).collect::<String>() + ":";
    let opts = node_opts(&db, &url, &prefix, RATES_OFF);
    let a = ApiNode::start(opts.clone()).await;
    let b = ApiNode::start(opts).await;
    create_site(&a.base, "acme").await;
    let max_age = format!("{}ms", MAX_AGE.as_millis());
    let edge = Edge::start(edge_opts([&a, &b], &url, &prefix, &["--max-age", &max_age])).await;
    let bus_up = || async { (edge.metric("chatty_edge_bus_up").await == 1.0).then_some(()) };
    wait_for(
        Duration::from_secs(10),
        "the edge's bus over Sentinel",
        bus_up,
    )
    .await;

    let dir = tempfile::tempdir().expect("temp dir");
    let load = Load::start(&edge.base, dir.path(), 21, RUN, POLL);
    let stop = Arc::new(AtomicBool::new(false));
    let prober = tokio::spawn(probe(
        Guest::join(&edge.base, "acme", "probe", "probe").await,
        stop.clone(),
    ));
    tokio::time::sleep(FAULT_AT).await;

    let resets = edge.metric("chatty_edge_map_resets_total").await;
    let old = redis.kill_primary().await;
    let killed = Instant::now();
    let (new, promoted_in) = redis.wait_promoted(old, Duration::from_secs(30)).await;
    assert_ne!(new, old);

    // Recovered: the edge heard its bus drop (its map forgotten) and is
    // back on the promoted primary, and a send through the edge reaches a
    // reader.
    let checker = Guest::join(&edge.base, "acme", "probe", "checker").await;
    let reader_client = client(&edge.base, "acme");
    let mut n = 0u32;
    wait_for(Duration::from_secs(30), "the stack to recover", || {
        n += 1;
        let (checker, reader_client, edge) = (&checker, &reader_client, &edge);
        async move {
            if edge.metric("chatty_edge_map_resets_total").await <= resets
                || edge.metric("chatty_edge_bus_up").await != 1.0
            {
                return None;
            }
            checker
                .round_trip(reader_client, "check", &format!("c-{n}"))
                .await
        }
    })
    .await;
    let recovered_in = killed.elapsed();
    stop.store(true, Ordering::Relaxed);
    let probed = prober.await.expect("the probe");
    // The API nodes' own clients (presence, rate limits) followed too: a
    // join (each on the next node) lands on the promoted primary. (One
    // made while a node's client was still reconnecting was answered
    // without presence, as while Redis is lost.)
    let mut n = 0u32;
    wait_for(
        Duration::from_secs(10),
        "a join on the promoted primary",
        || {
            n += 1;
            let (edge, prefix) = (&edge, &prefix);
            async move {
                let guest = Guest::join(&edge.base, "acme", "probe", &format!("j{n}")).await;
                let members = command(new, &format!("ZRANGE {prefix}p:acme/probe 0 -1"))
                    .await
                    .ok()?;
                members.contains(&guest.joined.member.id).then_some(())
            }
        },
    )
    .await;

    // The map relearns: a room read through the edge is then answered 304
    // from memory again.
    let short_circuits = r#"chatty_edge_requests_total{outcome="short_circuit"}"#;
    let before = edge.metric(short_circuits).await;
    let mut reader = Reader::new();
    reader.poll(&reader_client, "probe").await.expect("a poll");
    wait_for(Duration::from_secs(5), "a 304 from the edge's map", || {
        let (reader_client, edge) = (&reader_client, &edge);
        let mut r = Reader {
            after: reader.after,
            etag: reader.etag.clone(),
            events: Vec::new(),
        };
        async move {
            let moved = r.poll(reader_client, "probe").await.ok()?;
            (!moved && edge.metric(short_circuits).await > before).then_some(())
        }
    })
    .await;

    let f = load.finish().await;
    println!(
        "FAULT {{\"fault\":\"redis_sentinel_failover\",\"failed_requests\":{},\"sends_acknowledged\":{},\"lost_acknowledged\":{},\"duplicated\":{},\"missing\":{},\"out_of_order\":{},\"delivery_max_ms\":{:.0},\"promoted_in_ms\":{},\"recovered_in_ms\":{},\"probe_sends\":{},\"probe_failed\":{},\"probe_longest_gap_ms\":{}}}",
        f.failed_requests(),
        f.sends_acknowledged(),
        f.check("lost_acknowledged"),
        f.check("duplicated"),
        f.check("missing"),
        f.check("out_of_order"),
        f.delivery_max_ms(),
        promoted_in.as_millis(),
        recovered_in.as_millis(),
        probed.sent,
        probed.failed,
        probed.longest_gap.as_millis(),
    );
    f.assert_nothing_lost("redis_sentinel_failover");
    // Sends never waited for Redis: the probe's sends went on while the
    // primary was away (a second of slack for a loaded 2-core machine).
    assert!(
        probed.longest_gap < Duration::from_secs(1) + PROBE_EVERY * 2,
        "sends stopped for {:?} while Redis failed over ({probed:?})",
        probed.longest_gap
    );
    // A stale 304 is bounded as with one Redis: a poll interval plus the
    // edge's max-age (and a second of slack).
    let bound = (POLL + MAX_AGE + Duration::from_secs(1)).as_millis() as f64;
    assert!(
        f.delivery_max_ms() <= bound,
        "a message took {:.0} ms to reach a reader (bound {bound} ms)",
        f.delivery_max_ms()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_failover_is_followed() {
    let _heavy = chatty_tests::heavy().await;
    let redis = SentinelRedis::start().await;
    let url = redis.url();
    let db = FreshDb::create().await;
    let prefix = unique("s").chars().take(10).collect::<String>() + ":";
    let opts = node_opts(&db, &url, &prefix, RATES_OFF);
    let a = ApiNode::start(opts.clone()).await;
    let b = ApiNode::start(opts).await;
    create_site(&a.base, "acme").await;
    // A max-age far beyond the test: a poll answered from a version the bus
    // did not move would be a 304 for a minute.
    let edge = Edge::start(edge_opts([&a, &b], &url, &prefix, &["--max-age", "60s"])).await;
    let bus_up = || async { (edge.metric("chatty_edge_bus_up").await == 1.0).then_some(()) };
    wait_for(
        Duration::from_secs(10),
        "the edge's bus over Sentinel",
        bus_up,
    )
    .await;

    let old = redis.failover().await;
    let (new, promoted_in) = redis.wait_promoted(old, Duration::from_secs(30)).await;

    // The old primary stays a primary, taking writes, until the Sentinels
    // turn it into a replica of the new one (and drop its clients): every
    // client then moves over. A join on `b` lands on the new primary ...
    let promoted = Instant::now();
    let mut n = 0u32;
    wait_for(Duration::from_secs(20), "a join on the new primary", || {
        n += 1;
        let (b, prefix) = (&b, &prefix);
        async move {
            let guest = Guest::join(&b.base, "acme", "hall", &format!("g{n}")).await;
            let members = command(new, &format!("ZRANGE {prefix}p:acme/hall 0 -1"))
                .await
                .ok()?;
            members.contains(&guest.joined.member.id).then_some(())
        }
    })
    .await;
    let followed_in = promoted.elapsed();
    // The clients reconnect on the Sentinels' announcement, not when the
    // old primary is demoted (about ten seconds later).
    assert!(
        followed_in < Duration::from_secs(5),
        "clients took {followed_in:?} to follow the new primary"
    );

    // ... the edge and both nodes subscribe to the bus there ...
    wait_for(
        Duration::from_secs(20),
        "the bus on the new primary",
        || {
            let (prefix, edge) = (&prefix, &edge);
            async move {
                let reply = command(new, &format!("PUBSUB NUMSUB {prefix}bus"))
                    .await
                    .ok()?;
                (reply.trim_end().ends_with(":3") && edge.metric("chatty_edge_bus_up").await == 1.0)
                    .then_some(())
            }
        },
    )
    .await;
    let bus_in = promoted.elapsed();

    // ... and a send on node `a`, past the edge, reaches the edge through
    // it (with a max-age of a minute, a missed bump would be a 304).
    let ann = Guest::join(&edge.base, "acme", "hall", "ann").await;
    let through_edge = client(&edge.base, "acme");
    let on_a = client(&a.base, "acme");
    let mut n = 0u32;
    wait_for(
        Duration::from_secs(20),
        "a bump through the new primary",
        || {
            n += 1;
            let (ann, on_a, through_edge) = (&ann, &on_a, &through_edge);
            async move {
                let mut reader = Reader::new();
                reader.poll(through_edge, "hall").await.ok()?;
                let sent = on_a
                    .send("hall", &ann.joined.token, "moved", &format!("m-{n}"))
                    .await
                    .ok()?;
                for _ in 0..50 {
                    reader.poll(through_edge, "hall").await.ok()?;
                    if reader.events.iter().any(|e| e.seq == sent.seq) {
                        return Some(());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                None
            }
        },
    )
    .await;
    println!(
        "graceful failover: replica promoted in {} ms; presence on it {} ms later, the bus {} ms later",
        promoted_in.as_millis(),
        followed_in.as_millis(),
        bus_in.as_millis()
    );
}
