//! Two chat-api nodes on one MariaDB database and one Redis: concurrent
//! writers on both nodes, readers alternating between them, idempotent sends.

use std::collections::HashSet;
use std::time::Duration;

use chatty_tests::chat::{client, create_site, Guest, Reader};
use chatty_tests::procs::{ApiNode, ApiOpts};
use chatty_tests::services::{redis_prefix, FreshDb, REDIS_URL};
use chatty_tests::stack::{node_opts, RATES_OFF};

const WRITERS: usize = 4;
const PER_WRITER: usize = 150;
const READERS: usize = 3;

fn cluster_opts(db: &FreshDb, prefix: &str) -> ApiOpts {
    node_opts(db, REDIS_URL, prefix, RATES_OFF)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_reader_sees_every_message_once_in_seq_order() {
    let db = FreshDb::create().await;
    let prefix = redis_prefix().await;
    let a = ApiNode::start(cluster_opts(&db, &prefix)).await;
    let b = ApiNode::start(cluster_opts(&db, &prefix)).await;
    let nodes = [a.base.clone(), b.base.clone()];
    create_site(&a.base, "acme").await;

    let total = WRITERS * PER_WRITER;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let base = nodes[w % 2].clone();
        writers.push(tokio::spawn(async move {
            let guest = Guest::join(&base, "acme", "hall", &format!("writer{w}")).await;
            let mut sent = Vec::new();
            for n in 0..PER_WRITER {
                let text = format!("w{w} n{n}");
                let event = guest.send(&text, &format!("w{w}-{n}")).await;
                assert_eq!(event.text, text);
                sent.push(text);
            }
            sent
        }));
    }
    let mut readers = Vec::new();
    for r in 0..READERS {
        let nodes = nodes.clone();
        readers.push(tokio::spawn(async move {
            let clients = [client(&nodes[0], "acme"), client(&nodes[1], "acme")];
            let mut reader = Reader::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
            let mut i = r;
            while reader.events.len() < total {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "reader {r} stalled at {}",
                    reader.events.len()
                );
                reader.poll(&clients[i % 2], "hall").await.expect("poll");
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            reader
        }));
    }
    let mut sent = HashSet::new();
    for w in writers {
        sent.extend(w.await.expect("writer"));
    }
    assert_eq!(sent.len(), total);
    for r in readers {
        let reader = r.await.expect("reader");
        reader.assert_gapless();
        let seen: Vec<&str> = reader.events.iter().map(|e| e.text.as_str()).collect();
        let unique: HashSet<&str> = seen.iter().copied().collect();
        assert_eq!(seen.len(), total, "a reader saw {} events", seen.len());
        assert_eq!(unique.len(), total, "a reader saw a message twice");
        assert!(
            unique.iter().all(|t| sent.contains(*t)),
            "a reader saw a message nobody sent"
        );
    }
}

#[tokio::test]
async fn a_retried_send_returns_the_original_message_on_any_node() {
    let db = FreshDb::create().await;
    let prefix = redis_prefix().await;
    let a = ApiNode::start(cluster_opts(&db, &prefix)).await;
    let b = ApiNode::start(cluster_opts(&db, &prefix)).await;
    create_site(&a.base, "acme").await;
    let guest = Guest::join(&a.base, "acme", "hall", "ada").await;
    let first = guest.send("hello", "same-id").await;
    let again = guest.send("hello", "same-id").await;
    assert_eq!(first, again);
    // The same token and client_id through the other node.
    let other = client(&b.base, "acme");
    let third = other
        .send("hall", &guest.joined.token, "hello", "same-id")
        .await
        .expect("retry on node b");
    assert_eq!(first, third);
    let mut reader = Reader::new();
    reader.poll(&other, "hall").await.expect("poll");
    assert_eq!(
        reader.events.len(),
        1,
        "a retry must never store a second message"
    );
}
