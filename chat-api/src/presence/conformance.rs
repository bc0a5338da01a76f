//! The presence conformance suite: what every [`Presence`] implementation
//! must do, run against the in-process one and Redis alike.
//!
//! Rooms get random names, so the suite can share a backend with other
//! tests; expiry checks use TTLs of a few hundred milliseconds. Failures
//! panic, as tests do.

use std::sync::Arc;
use std::time::Duration;

use chatty_shared::wire::Member;
use chatty_shared::RoomKey;

use super::Presence;

const LONG: Duration = Duration::from_secs(60);
const SHORT: Duration = Duration::from_millis(300);

fn room() -> RoomKey {
    RoomKey::new("demo", &format!("r{:08x}", rand::random::<u32>())).expect("valid room")
}

fn member(id: &str, nick: &str) -> Member {
    Member {
        id: id.to_owned(),
        nick: nick.to_owned(),
    }
}

/// Runs every check in turn.
pub(crate) async fn run_all(p: Arc<dyn Presence>) {
    join_leave_heartbeat(&*p).await;
    rooms_are_independent(&*p).await;
    expiry(&*p).await;
    concurrent_sweeps(p.clone()).await;
}

/// Joins, renames, heartbeats and leaves move the version exactly when the
/// list changes, and versions only grow.
async fn join_leave_heartbeat(p: &dyn Presence) {
    let key = room();
    assert_eq!(p.list(&key).await.unwrap(), (vec![], 0));
    assert_eq!(p.leave(&key, "nobody").await.unwrap(), None);

    let v1 = p.join(&key, &member("a", "Zed"), LONG).await.unwrap();
    assert!(v1 > 0);
    assert_eq!(p.list(&key).await.unwrap(), (vec![member("a", "Zed")], v1));
    assert_eq!(
        p.join(&key, &member("a", "Zed"), LONG).await.unwrap(),
        v1,
        "a re-join changes nothing"
    );

    let v2 = p.join(&key, &member("a", "Ann"), LONG).await.unwrap();
    assert!(v2 > v1, "a new nick is a change");
    let v3 = p.join(&key, &member("b", "Bob 🚀"), LONG).await.unwrap();
    assert!(v3 > v2);
    let v3b = p.join(&key, &member("c", "Ann"), LONG).await.unwrap();
    assert!(v3b > v3);
    assert_eq!(
        p.list(&key).await.unwrap(),
        (
            vec![
                member("a", "Ann"),
                member("c", "Ann"),
                member("b", "Bob 🚀")
            ],
            v3b
        ),
        "ordered by nick, then id"
    );

    assert_eq!(
        p.heartbeat(&key, &member("a", "Ann"), LONG).await.unwrap(),
        None
    );
    assert_eq!(p.list(&key).await.unwrap().1, v3b);

    let v4 = p.leave(&key, "a").await.unwrap().expect("a was there");
    assert!(v4 > v3b);
    assert_eq!(p.leave(&key, "a").await.unwrap(), None);
    assert_eq!(p.list(&key).await.unwrap().1, v4);

    let v5 = p
        .heartbeat(&key, &member("a", "Ann"), LONG)
        .await
        .unwrap()
        .expect("a heartbeat re-adds a missing member");
    assert!(v5 > v4);
    let (members, v) = p.list(&key).await.unwrap();
    assert_eq!(v, v5);
    assert_eq!(members.len(), 3);

    let mut last = v5;
    for i in 0..20 {
        let v = p
            .join(&key, &member("d", &format!("n{i}")), LONG)
            .await
            .unwrap();
        assert!(v > last, "versions never repeat");
        last = v;
    }
}

/// One room's changes leave another's members and version alone.
async fn rooms_are_independent(p: &dyn Presence) {
    let (a, b) = (room(), room());
    p.join(&a, &member("m", "M"), LONG).await.unwrap();
    let vb = p.join(&b, &member("m", "M"), LONG).await.unwrap();
    p.leave(&a, "m").await.unwrap();
    assert_eq!(p.list(&b).await.unwrap(), (vec![member("m", "M")], vb));
    assert!(p.list(&a).await.unwrap().0.is_empty());
}

/// A member without heartbeat is removed by a sweep after the ttl; one who
/// keeps heart-beating stays.
async fn expiry(p: &dyn Presence) {
    let key = room();
    p.join(&key, &member("gone", "G"), SHORT).await.unwrap();
    p.join(&key, &member("stays", "S"), SHORT).await.unwrap();
    let before = p.list(&key).await.unwrap().1;
    let moved = p.sweep(10_000).await.unwrap();
    assert!(moved.iter().all(|(k, _)| *k != key), "nothing expired yet");

    for _ in 0..5 {
        tokio::time::sleep(SHORT / 4).await;
        assert_eq!(
            p.heartbeat(&key, &member("stays", "S"), SHORT)
                .await
                .unwrap(),
            None
        );
    }
    let moved = p.sweep(10_000).await.unwrap();
    let ours: Vec<u64> = moved
        .iter()
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(ours.len(), 1, "the room is reported once: {moved:?}");
    assert!(ours[0] > before);
    assert_eq!(
        p.list(&key).await.unwrap(),
        (vec![member("stays", "S")], ours[0])
    );

    let again = p.sweep(10_000).await.unwrap();
    assert!(
        again.iter().all(|(k, _)| *k != key),
        "a removal is reported once"
    );
}

/// Several sweeps at once: each expired room is reported by exactly one.
async fn concurrent_sweeps(p: Arc<dyn Presence>) {
    let key = room();
    for i in 0..20 {
        p.join(
            &key,
            &member(&format!("m{i}"), "x"),
            Duration::from_millis(100),
        )
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    let sweeps: Vec<_> = (0..4)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { p.sweep(10_000).await.unwrap() })
        })
        .collect();
    let mut reports = 0;
    for s in sweeps {
        reports += s
            .await
            .expect("sweep task")
            .iter()
            .filter(|(k, _)| *k == key)
            .count();
    }
    assert_eq!(reports, 1);
    assert!(p.list(&key).await.unwrap().0.is_empty());
}
