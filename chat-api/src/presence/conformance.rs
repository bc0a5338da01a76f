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

/// Every member of a small room, and its version; the count agrees.
async fn all(p: &dyn Presence, key: &RoomKey) -> (Vec<Member>, u64) {
    let (list, version) = p.list(key, 1000).await.unwrap();
    assert_eq!(list.count, list.members.len() as u64, "{list:?}");
    (list.members, version)
}

/// Runs every check in turn.
pub(crate) async fn run_all(p: Arc<dyn Presence>) {
    join_leave_heartbeat(&*p).await;
    rooms_are_independent(&*p).await;
    expiry(&*p).await;
    concurrent_sweeps(p.clone()).await;
    a_list_reads_its_first_members_and_counts_them_all(&*p).await;
    verified_members(&*p).await;
}

/// A list names the first `max` members in order and counts them all,
/// through renames and leaves.
async fn a_list_reads_its_first_members_and_counts_them_all(p: &dyn Presence) {
    let key = room();
    for i in (0..30).rev() {
        p.join(
            &key,
            &member(&format!("m{i:02}"), &format!("n{i:02}")),
            LONG,
        )
        .await
        .unwrap();
    }
    let (list, v) = p.list(&key, 3).await.unwrap();
    assert_eq!(list.count, 30);
    let names: Vec<&str> = list.members.iter().map(|m| m.nick.as_str()).collect();
    assert_eq!(names, ["n00", "n01", "n02"]);
    // A rename moves a member in the order; a leave takes them out of it.
    p.join(&key, &member("m29", "a first"), LONG).await.unwrap();
    p.leave(&key, "m00").await.unwrap();
    let (list, v2) = p.list(&key, 3).await.unwrap();
    assert!(v2 > v);
    assert_eq!(list.count, 29);
    assert_eq!(
        list.members,
        [
            member("m29", "a first"),
            member("m01", "n01"),
            member("m02", "n02")
        ]
    );
    // A nick that is another's with more after it comes after it.
    p.join(&key, &member("m28", "a"), LONG).await.unwrap();
    let (list, _) = p.list(&key, 2).await.unwrap();
    assert_eq!(list.members, [member("m28", "a"), member("m29", "a first")]);
    assert_eq!(p.list(&key, 0).await.unwrap().0.count, 29);
}

/// The verified members of a room (ids of signed-in users), through
/// renames, leaves and the sweep.
async fn verified_members(p: &dyn Presence) {
    let key = room();
    p.join(&key, &member("guest1", "Ann"), LONG).await.unwrap();
    p.join(&key, &member("u_ann", "Ann"), LONG).await.unwrap();
    p.join(&key, &member("u_bob", "Bob"), SHORT).await.unwrap();
    let mut v = p.verified(&key).await.unwrap();
    v.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(v, [member("u_ann", "Ann"), member("u_bob", "Bob")]);
    p.join(&key, &member("u_ann", "Annie"), LONG).await.unwrap();
    p.leave(&key, "guest1").await.unwrap();
    tokio::time::sleep(SHORT * 2).await;
    p.sweep(10_000).await.unwrap();
    assert_eq!(p.verified(&key).await.unwrap(), [member("u_ann", "Annie")]);
    assert_eq!(all(p, &key).await.0, [member("u_ann", "Annie")]);
    p.leave(&key, "u_ann").await.unwrap();
    assert!(p.verified(&key).await.unwrap().is_empty());
    assert!(p.verified(&room()).await.unwrap().is_empty());
}

/// Joins, renames, heartbeats and leaves move the version exactly when the
/// list changes, and versions only grow.
async fn join_leave_heartbeat(p: &dyn Presence) {
    let key = room();
    assert_eq!(all(p, &key).await, (vec![], 0));
    assert_eq!(p.leave(&key, "nobody").await.unwrap(), None);

    let v1 = p.join(&key, &member("a", "Zed"), LONG).await.unwrap();
    assert!(v1 > 0);
    assert_eq!(all(p, &key).await, (vec![member("a", "Zed")], v1));
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
        all(p, &key).await,
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
    assert_eq!(all(p, &key).await.1, v3b);

    let v4 = p.leave(&key, "a").await.unwrap().expect("a was there");
    assert!(v4 > v3b);
    assert_eq!(p.leave(&key, "a").await.unwrap(), None);
    assert_eq!(all(p, &key).await.1, v4);

    let v5 = p
        .heartbeat(&key, &member("a", "Ann"), LONG)
        .await
        .unwrap()
        .expect("a heartbeat re-adds a missing member");
    assert!(v5 > v4);
    let (members, v) = all(p, &key).await;
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
    assert_eq!(all(p, &b).await, (vec![member("m", "M")], vb));
    assert!(all(p, &a).await.0.is_empty());
}

/// A member without heartbeat is removed by a sweep after the ttl; one who
/// keeps heart-beating stays.
async fn expiry(p: &dyn Presence) {
    let key = room();
    p.join(&key, &member("gone", "G"), SHORT).await.unwrap();
    p.join(&key, &member("stays", "S"), SHORT).await.unwrap();
    let before = all(p, &key).await.1;
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
    assert_eq!(all(p, &key).await, (vec![member("stays", "S")], ours[0]));

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
    assert!(all(&*p, &key).await.0.is_empty());
}
