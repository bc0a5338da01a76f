//! Redis Cluster: two API nodes and an edge on a `redis-cluster://` URL (a
//! private cluster of three primaries). The bus is a sharded channel and a
//! bump published by one node reaches the edge through it; presence and
//! rate limits work across nodes, their keys spread over the shards.

use std::time::Duration;

use chatty::client::ClientError;
use chatty_shared::wire::MembersList;
use chatty_tests::chat::{client, create_site, Guest, Reader};
use chatty_tests::procs::{ApiNode, Edge};
use chatty_tests::redis_cluster::RedisCluster;
use chatty_tests::services::FreshDb;
use chatty_tests::stack::{edge_opts, node_opts};
use chatty_tests::{http, unique, wait_for};

async fn members(node: &ApiNode, room: &str) -> Vec<String> {
    let list: MembersList = http()
        .get(format!("{}/v1/sites/acme/rooms/{room}/members", node.base))
        .send()
        .await
        .expect("members")
        .json()
        .await
        .expect("members body");
    list.members.into_iter().map(|m| m.nick).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_presence_and_rate_limits_on_a_cluster() {
    let _heavy = chatty_tests::heavy().await;
    let cluster = RedisCluster::start().await;
    let url = cluster.url();
    let db = FreshDb::create().await;
    let prefix = unique("c").chars().take(10).collect::<String>() + ":";
    let extra = [
        "--guest-rate",
        "3/60s",
        "--ip-rate",
        "off",
        "--presence-ttl",
        "2s",
    ];
    let opts = node_opts(&db, &url, &prefix, &extra);
    let a = ApiNode::start(opts.clone()).await;
    let b = ApiNode::start(opts).await;
    create_site(&a.base, "acme").await;
    // A max-age far beyond the test: a poll answered from a version the bus
    // did not move would be a 304 for a minute.
    let edge = Edge::start(edge_opts([&a, &b], &url, &prefix, &["--max-age", "60s"])).await;
    wait_for(
        Duration::from_secs(10),
        "the edge's bus on the cluster",
        || async { (edge.metric("chatty_edge_bus_up").await == 1.0).then_some(()) },
    )
    .await;

    // The bus is a sharded channel: the edge and both nodes subscribe to it
    // on the shard that owns it, and nobody to a classic channel.
    let channel = format!("{prefix}bus");
    assert!(
        cluster
            .sum_last_number(&format!("PUBSUB SHARDNUMSUB {channel}"))
            .await
            >= 3,
        "the edge and the nodes subscribe to the sharded channel"
    );
    assert_eq!(
        cluster
            .sum_last_number(&format!("PUBSUB NUMSUB {channel}"))
            .await,
        0,
        "no classic subscription"
    );

    // A send on node `a`, past the edge, reaches the edge through the bus.
    let ann = Guest::join(&edge.base, "acme", "hall", "ann").await;
    let through_edge = client(&edge.base, "acme");
    let mut reader = Reader::new();
    reader.poll(&through_edge, "hall").await.expect("a poll");
    let on_a = client(&a.base, "acme");
    let sent = on_a
        .send("hall", &ann.joined.token, "over the bus", "m1")
        .await
        .expect("a send on node a");
    let start = std::time::Instant::now();
    while !reader.events.iter().any(|e| e.seq == sent.seq) {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the bump did not reach the edge"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        reader.poll(&through_edge, "hall").await.expect("a poll");
    }

    // Rate limits are counted once for both nodes: 3 sends a minute per
    // guest, the first above on `a`, then `b`, `a`, and the fourth on `b`
    // is refused (each node on its own would allow it).
    let on_b = client(&b.base, "acme");
    on_b.send("hall", &ann.joined.token, "two", "m2")
        .await
        .expect("the second send");
    on_a.send("hall", &ann.joined.token, "three", "m3")
        .await
        .expect("the third send");
    match on_b.send("hall", &ann.joined.token, "four", "m4").await {
        Err(ClientError::Status { status: 429, .. }) => {}
        other => panic!("the fourth send in a minute was not refused: {other:?}"),
    }
    let counters = cluster.keys(&format!("{prefix}l:*")).await;
    assert!(!counters.is_empty(), "rate-limit counters in the cluster");
    for (_, key) in &counters {
        assert!(
            key.contains(":l:{"),
            "a counter without its hash tag: {key}"
        );
    }

    // Presence: joins on either node are listed by both, a leave is seen at
    // once, an expiry is swept.
    let bob = Guest::join(&b.base, "acme", "hall", "bob").await;
    assert_eq!(members(&a, "hall").await, ["ann", "bob"]);
    bob.client
        .leave("hall", &bob.joined.token)
        .await
        .expect("leave");
    assert_eq!(members(&a, "hall").await, ["ann"]);
    let rooms: Vec<String> = (0..8).map(|i| format!("room-{i}")).collect();
    for room in &rooms {
        Guest::join(&a.base, "acme", room, "cyd").await;
    }
    for room in &rooms {
        assert_eq!(members(&b, room).await, ["cyd"], "{room}");
    }
    let shards: std::collections::HashSet<u16> = cluster
        .keys(&format!("{prefix}{{p*}}:p:*"))
        .await
        .into_iter()
        .map(|(port, _)| port)
        .collect();
    assert!(
        shards.len() >= 2,
        "presence spread over the shards: {shards:?}"
    );
    // Nobody heart-beats: the sweep removes everyone after the 2 s ttl.
    wait_for(Duration::from_secs(10), "the sweep", || {
        let (a, rooms) = (&a, &rooms);
        async move {
            for room in rooms.iter().map(String::as_str).chain(["hall"]) {
                if !members(a, room).await.is_empty() {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
}
