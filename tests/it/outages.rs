//! Backend outages made with the suite's own fault proxy (the shared MariaDB
//! and Redis are never touched): Redis lost → sends still succeed; MariaDB
//! lost → fast 503 with Retry-After; both recover without a restart.

use std::time::{Duration, Instant};

use chatty::client::ClientError;
use chatty_tests::chat::{create_site, Guest, Reader};
use chatty_tests::fault::{FaultProxy, Mode};
use chatty_tests::procs::{ApiNode, ApiOpts};
use chatty_tests::services::{redis_prefix, FreshDb};
use chatty_tests::wait_for;

#[tokio::test]
async fn redis_lost_sends_still_succeed_and_presence_recovers() {
    let db = FreshDb::create().await;
    let prefix = redis_prefix().await;
    let redis = FaultProxy::start(6379).await;
    let api = ApiNode::start(ApiOpts {
        mysql_url: Some(db.url.clone()),
        redis_url: Some(format!("redis://127.0.0.1:{}", redis.port)),
        redis_prefix: Some(prefix),
        ..ApiOpts::default()
    })
    .await;
    create_site(&api.base, "acme").await;
    let guest = Guest::join(&api.base, "acme", "hall", "ada").await;
    guest.send("before", "c0").await;

    for mode in [Mode::Cut, Mode::Hang] {
        redis.set(mode).await;
        let started = Instant::now();
        let sent = guest
            .send(&format!("during {mode:?}"), &format!("c-{mode:?}"))
            .await;
        assert!(sent.seq > 0);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a send waited on Redis: {:?}",
            started.elapsed()
        );
        redis.set(Mode::Pass).await;
    }

    // Back: presence answers again without a restart.
    wait_for(
        Duration::from_secs(10),
        "presence after Redis is back",
        || async {
            let g = Guest::join(&api.base, "acme", "hall", "bob").await;
            g.joined
                .members
                .iter()
                .any(|m| m.nick == "bob")
                .then_some(())
        },
    )
    .await;
    let mut reader = Reader::new();
    reader.poll(&guest.client, "hall").await.expect("poll");
    reader.assert_gapless();
    assert_eq!(reader.events.len(), 3, "every acknowledged send is stored");
}

#[tokio::test]
async fn mariadb_lost_answers_503_fast_and_recovers() {
    let db = FreshDb::create().await;
    let mysql = FaultProxy::start(3306).await;
    let api = ApiNode::start(ApiOpts {
        mysql_url: Some(db.url_via(mysql.port)),
        redis_url: Some(chatty_tests::services::REDIS_URL.into()),
        redis_prefix: Some(redis_prefix().await),
        ..ApiOpts::default()
    })
    .await;
    create_site(&api.base, "acme").await;
    let guest = Guest::join(&api.base, "acme", "hall", "ada").await;
    guest.send("before", "c0").await;

    for mode in [Mode::Cut, Mode::Hang] {
        mysql.set(mode).await;
        let started = Instant::now();
        let err = guest
            .client
            .send(
                "hall",
                &guest.joined.token,
                "during",
                &format!("c-{mode:?}"),
            )
            .await
            .expect_err("a send without the store must fail");
        let took = started.elapsed();
        match err {
            ClientError::Status {
                status,
                retry_after,
                ..
            } => {
                assert_eq!(status, 503, "{mode:?}");
                assert!(retry_after.is_some(), "503 without Retry-After ({mode:?})");
            }
            other => panic!("expected 503 while MariaDB is {mode:?}, got {other}"),
        }
        assert!(
            took < Duration::from_secs(1),
            "503 took {took:?} ({mode:?})"
        );
        mysql.set(Mode::Pass).await;
        // Recovers by itself: the same send (same client_id) goes through.
        wait_for(
            Duration::from_secs(15),
            "sends after MariaDB is back",
            || async {
                guest
                    .client
                    .send(
                        "hall",
                        &guest.joined.token,
                        "during",
                        &format!("c-{mode:?}"),
                    )
                    .await
                    .ok()
            },
        )
        .await;
    }
    let mut reader = Reader::new();
    reader.poll(&guest.client, "hall").await.expect("poll");
    reader.assert_gapless();
    assert_eq!(reader.events.len(), 3);
}
