//! The store conformance suite: what every [`Store`] backend must do, run
//! against SQLite and MySQL alike; compiled for tests only.
//!
//! Each check uses its own random site and room names, so the suite can run
//! on a database other tests use too. Failures panic, as tests do.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chatty_shared::wire::{BlockAction, EventKind, GuestAccess, LinkPolicy, SiteLimits, SiteRules};
use chatty_shared::RoomKey;
use chatty_shared::RoomVersion;

use super::{Erased, NewMessage, NewSite, Store, StoreError};

mod batches;

use batches::{batches, concurrent_batches};

/// A message from `member` with idempotency key `client`.
pub(crate) fn message(member: &str, client: &str, text: &str) -> NewMessage {
    NewMessage {
        member_id: member.to_owned(),
        nick: format!("nick-{member}"),
        text: text.to_owned(),
        client_id: client.to_owned(),
        at_ms: 1_700_000_000_000,
    }
}

pub(super) fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

fn room() -> RoomKey {
    RoomKey::new(&unique("s"), &unique("r")).expect("valid generated room key")
}

fn limits() -> SiteLimits {
    SiteLimits {
        max_text_bytes: 2000,
        guest_messages: 5,
        guest_window_secs: 10,
    }
}

/// A site created with the default test limits.
async fn new_site(store: &dyn Store, id: &str) {
    let site = NewSite {
        id: id.to_owned(),
        origins: vec![],
        secret_hash: [1; 32],
        limits: limits(),
    };
    store.create_site(&site).await.unwrap();
}

/// A site's rules and its rooms' own slow mode: none until set, replaced
/// whole, kept exactly (Unicode, quotes, backslashes), per site and room,
/// and refused for a site that does not exist.
async fn rules(store: &dyn Store) {
    let id = unique("rules");
    let other = unique("rules");
    new_site(store, &id).await;
    new_site(store, &other).await;
    assert_eq!(store.rules(&id).await.unwrap(), None);
    let first = SiteRules {
        blocked_words: vec!["darn".into(), "ñandú \"quoted\"".into(), "дурак".into()],
        blocked_patterns: vec![r"fr[e3]{2}\s+\\money".into()],
        action: BlockAction::Refuse,
        links: LinkPolicy::Deny,
        slow_mode_secs: 30,
        guests: GuestAccess::Read,
    };
    store.set_rules(&id, &first).await.unwrap();
    assert_eq!(store.rules(&id).await.unwrap().as_ref(), Some(&first));
    assert_eq!(store.rules(&other).await.unwrap(), None);
    let second = SiteRules {
        blocked_words: vec!["x".repeat(100); 500],
        ..SiteRules::default()
    };
    store.set_rules(&id, &second).await.unwrap();
    assert_eq!(store.rules(&id).await.unwrap().as_ref(), Some(&second));
    let missing = unique("nosite");
    assert!(matches!(
        store.set_rules(&missing, &first).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.rules(&missing).await.unwrap(), None);

    let lobby = RoomKey::new(&id, "lobby").unwrap();
    let hall = RoomKey::new(&id, "hall").unwrap();
    let elsewhere = RoomKey::new(&other, "lobby").unwrap();
    assert_eq!(store.room_slow_mode(&lobby).await.unwrap(), None);
    store.set_room_slow_mode(&lobby, Some(10)).await.unwrap();
    store.set_room_slow_mode(&hall, Some(0)).await.unwrap();
    assert_eq!(store.room_slow_mode(&lobby).await.unwrap(), Some(10));
    assert_eq!(store.room_slow_mode(&hall).await.unwrap(), Some(0));
    assert_eq!(store.room_slow_mode(&elsewhere).await.unwrap(), None);
    store
        .set_room_slow_mode(&lobby, Some(86_400))
        .await
        .unwrap();
    assert_eq!(store.room_slow_mode(&lobby).await.unwrap(), Some(86_400));
    store.set_room_slow_mode(&lobby, None).await.unwrap();
    store.set_room_slow_mode(&lobby, None).await.unwrap();
    assert_eq!(store.room_slow_mode(&lobby).await.unwrap(), None);
    assert_eq!(store.room_slow_mode(&hall).await.unwrap(), Some(0));
    let nowhere = RoomKey::new(&missing, "lobby").unwrap();
    assert!(matches!(
        store.set_room_slow_mode(&nowhere, Some(5)).await,
        Err(StoreError::NotFound)
    ));
}

/// Runs every check in turn.
pub(crate) async fn run_all(store: Arc<dyn Store>) {
    store.ping().await.expect("ping");
    sites(&*store).await;
    bans(&*store).await;
    user_keys(&*store).await;
    rules(&*store).await;
    append_and_retry(&*store).await;
    batches(&*store).await;
    deletion(&*store).await;
    erasure(&*store).await;
    paging(&*store).await;
    recent(&*store).await;
    unknown_room(&*store).await;
    concurrent_sends(store.clone(), 8, 50).await;
    concurrent_batches(store.clone(), 6, 20).await;
    super::moderation::conformance::run_all(&*store).await;
}

/// Sites: create, read, list, conflict, limits.
async fn sites(store: &dyn Store) {
    let id = unique("site");
    let site = NewSite {
        id: id.clone(),
        origins: vec!["https://a.example".into(), "http://localhost:*".into()],
        secret_hash: [7; 32],
        limits: limits(),
    };
    assert!(store.site(&id).await.unwrap().is_none());
    store.create_site(&site).await.unwrap();
    let got = store.site(&id).await.unwrap().expect("created site");
    assert_eq!(got.id, id);
    assert_eq!(got.origins, site.origins);
    assert_eq!(got.secret_hash, [7; 32]);
    assert_eq!(got.limits, limits());

    let again = NewSite {
        origins: vec![],
        ..site.clone()
    };
    assert!(matches!(
        store.create_site(&again).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        store.site(&id).await.unwrap().unwrap().origins,
        site.origins
    );

    let other = NewSite {
        id: unique("site"),
        origins: vec![],
        secret_hash: [1; 32],
        limits: limits(),
    };
    store.create_site(&other).await.unwrap();
    let listed = store.list_sites().await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|s| s.id.as_str()).collect();
    assert!(ids.contains(&id.as_str()) && ids.contains(&other.id.as_str()));
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "list_sites is ordered by id");

    let new_limits = SiteLimits {
        max_text_bytes: 500,
        guest_messages: 0,
        guest_window_secs: 60,
    };
    store.set_limits(&id, new_limits).await.unwrap();
    assert_eq!(store.site(&id).await.unwrap().unwrap().limits, new_limits);
    assert_eq!(
        store.site(&other.id).await.unwrap().unwrap().limits,
        limits()
    );
    assert!(matches!(
        store.set_limits(&unique("nosite"), new_limits).await,
        Err(StoreError::NotFound)
    ));
}

/// Bans are per site and idempotent.
async fn bans(store: &dyn Store) {
    let (a, b) = (unique("site"), unique("site"));
    assert!(!store.is_banned(&a, "m1").await.unwrap());
    store.ban(&a, "m1").await.unwrap();
    store.ban(&a, "m1").await.unwrap();
    assert!(store.is_banned(&a, "m1").await.unwrap());
    assert!(!store.is_banned(&a, "m2").await.unwrap());
    assert!(!store.is_banned(&b, "m1").await.unwrap());
}

/// Keys are kept per site and id, listed in id order, refused twice, and
/// removed once.
async fn user_keys(store: &dyn Store) {
    use crate::host_token::{KeyAlg, UserKey};
    let (a, b) = (unique("site"), unique("site"));
    let key = |kid: &str, alg, byte: u8| UserKey {
        kid: kid.into(),
        alg,
        key: vec![byte; 32],
    };
    assert!(store.user_keys(&a).await.unwrap().is_empty());
    let k2 = key("k2", KeyAlg::HmacSha256, 2);
    let k1 = key("k1", KeyAlg::Ed25519, 1);
    store.add_user_key(&a, &k2).await.unwrap();
    store.add_user_key(&a, &k1).await.unwrap();
    store
        .add_user_key(&b, &key("k1", KeyAlg::HmacSha256, 3))
        .await
        .unwrap();
    assert!(matches!(
        store
            .add_user_key(&a, &key("k1", KeyAlg::HmacSha256, 9))
            .await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.user_keys(&a).await.unwrap(), vec![k1.clone(), k2]);
    store.remove_user_key(&a, "k2").await.unwrap();
    assert!(matches!(
        store.remove_user_key(&a, "k2").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.user_keys(&a).await.unwrap(), vec![k1]);
    assert_eq!(store.user_keys(&b).await.unwrap().len(), 1);
}

/// Seqs 1, 2, 3 …; a retry returns the original; rooms are independent.
async fn append_and_retry(store: &dyn Store) {
    let key = room();
    let a = store
        .append_message(&key, message("m1", "c1", "hello"))
        .await
        .unwrap();
    assert!(a.created);
    assert_eq!(a.event.seq, 1);
    assert_eq!(a.event.kind, EventKind::Message);
    assert_eq!(a.event.client_id.as_deref(), Some("c1"));
    assert_eq!(a.event.deletes, None);
    assert_ne!(a.version.epoch, 0);
    assert_eq!(a.version.seq, 1);

    let unicode = NewMessage {
        nick: "Zoë 🚀".into(),
        ..message("m2", "c1", "<b>bold</b> & ünïcödé 🎉")
    };
    let b = store.append_message(&key, unicode.clone()).await.unwrap();
    assert!(
        b.created,
        "same client id from another member is a new message"
    );
    assert_eq!(b.event.seq, 2);
    assert_eq!(b.event.text, unicode.text);
    assert_eq!(b.event.nick, unicode.nick);
    assert_eq!(b.version, RoomVersion::new(a.version.epoch, 2));

    let c = store
        .append_message(&key, message("m1", "c2", "third"))
        .await
        .unwrap();
    assert_eq!(c.event.seq, 3);

    let retry = store
        .append_message(&key, message("m1", "c1", "hello again"))
        .await
        .unwrap();
    assert!(!retry.created);
    assert_eq!(retry.event, a.event, "a retry returns the original event");
    assert_eq!(
        retry.version,
        RoomVersion::new(a.version.epoch, 3),
        "and the current version"
    );
    assert_eq!(store.room_version(&key).await.unwrap(), retry.version);

    let (events, version) = store.events_after(&key, 0, 100).await.unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(events[0], a.event);
    assert_eq!(events[1], b.event);
    assert_eq!(version, retry.version);

    let other = RoomKey::new(key.site(), &unique("r")).expect("valid room");
    let d = store
        .append_message(&other, message("m1", "c1", "elsewhere"))
        .await
        .unwrap();
    assert!(d.created, "idempotency is per room");
    assert_eq!(d.event.seq, 1);
}

/// A deletion is an event; deleting twice returns the first deletion.
/// A member's messages are erased in every room of the site and in no
/// other: a deletion event for each one still shown, the text and nick
/// gone from the store; erasing again does nothing.
async fn erasure(store: &dyn Store) {
    let site = unique("s");
    let (hall, desk) = (
        RoomKey::new(&site, "hall").unwrap(),
        RoomKey::new(&site, "desk").unwrap(),
    );
    let elsewhere = RoomKey::new(&unique("s"), "hall").unwrap();
    for (key, member, n) in [
        (&hall, "m1", 3),
        (&desk, "m1", 1),
        (&hall, "m2", 1),
        (&elsewhere, "m1", 1),
    ] {
        for i in 0..n {
            store
                .append_message(key, message(member, &format!("c{i}"), "secret words"))
                .await
                .unwrap();
        }
    }
    // One of m1's messages was deleted before: erased too, not deleted again.
    store.delete_message(&hall, 1, 5).await.unwrap();
    let erased = store.erase_member(&site, "m1", 9).await.unwrap();
    assert_eq!(erased.messages, 4);
    let mut moved = erased.moved.clone();
    moved.sort_by(|a, b| a.0.room().cmp(b.0.room()));
    let (hall_v, desk_v) = (
        store.room_version(&hall).await.unwrap(),
        store.room_version(&desk).await.unwrap(),
    );
    assert_eq!(moved, vec![(desk.clone(), desk_v), (hall.clone(), hall_v)]);
    assert_eq!(
        (hall_v.seq, desk_v.seq),
        (7, 2),
        "two deletions in hall, one in desk"
    );
    let (events, _) = store.events_after(&hall, 0, 100).await.unwrap();
    for e in &events {
        match (e.kind, e.member_id.as_str()) {
            (EventKind::Message, "m1") => assert_eq!((e.text.as_str(), e.nick.as_str()), ("", "")),
            (EventKind::Message, _) => assert_eq!(e.text, "secret words"),
            _ => {}
        }
    }
    let deleted: Vec<u64> = events.iter().filter_map(|e| e.deletes).collect();
    assert_eq!(deleted, vec![1, 2, 3]);
    let (other, _) = store.events_after(&elsewhere, 0, 100).await.unwrap();
    assert_eq!(
        other[0].text, "secret words",
        "another site's member of the same id"
    );
    let again = store.erase_member(&site, "m1", 10).await.unwrap();
    assert_eq!(again, Erased::default());
}

async fn deletion(store: &dyn Store) {
    let key = room();
    assert!(matches!(
        store.delete_message(&key, 1, 5).await,
        Err(StoreError::NotFound)
    ));
    for i in 1..=3 {
        store
            .append_message(&key, message("m1", &format!("c{i}"), &format!("text {i}")))
            .await
            .unwrap();
    }
    let del = store.delete_message(&key, 2, 42).await.unwrap();
    assert!(del.created);
    assert_eq!(del.event.seq, 4);
    assert_eq!(del.event.kind, EventKind::Deletion);
    assert_eq!(del.event.deletes, Some(2));
    assert_eq!(del.event.client_id, None);
    assert_eq!(del.event.at_ms, 42);
    assert_eq!(del.version.seq, 4);

    let again = store.delete_message(&key, 2, 99).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.event, del.event);
    assert_eq!(again.version, del.version);

    for bad in [4, 5, 0, u64::MAX, i64::MAX as u64] {
        assert!(
            matches!(
                store.delete_message(&key, bad, 1).await,
                Err(StoreError::NotFound)
            ),
            "deleting seq {bad}"
        );
    }
    assert_eq!(store.room_version(&key).await.unwrap(), del.version);

    let (events, _) = store.events_after(&key, 0, 100).await.unwrap();
    assert_eq!(events.len(), 4);
    assert_eq!(events[3], del.event);
    let (recent, version) = store.recent_messages(&key, 10).await.unwrap();
    assert_eq!(recent.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 3]);
    assert_eq!(version, del.version);

    let retry = store
        .append_message(&key, message("m1", "c2", "x"))
        .await
        .unwrap();
    assert!(
        !retry.created,
        "a retry of a deleted message is still a retry"
    );
    assert_eq!(retry.event.seq, 2);
}

/// `events_after` pages in seq order.
async fn paging(store: &dyn Store) {
    let key = room();
    for i in 1..=25 {
        store
            .append_message(&key, message("m1", &format!("c{i}"), &i.to_string()))
            .await
            .unwrap();
    }
    let mut after = 0;
    let mut sizes = Vec::new();
    loop {
        let (page, version) = store.events_after(&key, after, 10).await.unwrap();
        assert_eq!(version.seq, 25);
        if page.is_empty() {
            break;
        }
        for (i, e) in page.iter().enumerate() {
            assert_eq!(e.seq, after + 1 + i as u64);
            assert_eq!(e.text, e.seq.to_string());
        }
        sizes.push(page.len());
        after = page.last().map(|e| e.seq).unwrap_or(after);
    }
    assert_eq!(sizes, [10, 10, 5]);
    for after in [25, 26, u64::MAX] {
        let (page, version) = store.events_after(&key, after, 10).await.unwrap();
        assert!(page.is_empty());
        assert_eq!(version.seq, 25);
    }
    let (page, _) = store.events_after(&key, 0, 0).await.unwrap();
    assert!(page.is_empty());
    let (page, _) = store.events_after(&key, 3, usize::MAX).await.unwrap();
    assert_eq!(page.len(), 22);
}

/// `recent_messages`: the last ones, oldest first.
async fn recent(store: &dyn Store) {
    let key = room();
    for i in 1..=7 {
        store
            .append_message(&key, message("m1", &format!("c{i}"), &i.to_string()))
            .await
            .unwrap();
    }
    let (recent, version) = store.recent_messages(&key, 3).await.unwrap();
    assert_eq!(recent.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 6, 7]);
    assert_eq!(version.seq, 7);
    store.delete_message(&key, 7, 1).await.unwrap();
    let (recent, version) = store.recent_messages(&key, 3).await.unwrap();
    assert_eq!(recent.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5, 6]);
    assert_eq!(version.seq, 8);
    let (all, _) = store.recent_messages(&key, 100).await.unwrap();
    assert_eq!(all.len(), 6);
    assert!(all.iter().all(|e| e.kind == EventKind::Message));
    let (none, _) = store.recent_messages(&key, 0).await.unwrap();
    assert!(none.is_empty());
}

/// A room never written: version (0, 0), nothing to read, and reading does
/// not create it.
async fn unknown_room(store: &dyn Store) {
    let key = room();
    for _ in 0..2 {
        assert_eq!(
            store.room_version(&key).await.unwrap(),
            RoomVersion::new(0, 0)
        );
        let (events, version) = store.events_after(&key, 0, 100).await.unwrap();
        assert!(events.is_empty());
        assert_eq!(version, RoomVersion::new(0, 0));
        let (events, version) = store.recent_messages(&key, 100).await.unwrap();
        assert!(events.is_empty());
        assert_eq!(version, RoomVersion::new(0, 0));
    }
}

/// `tasks` writers each send `per_task` messages to one room while a
/// reader polls: seqs are 1..=tasks*per_task with no gap and no duplicate,
/// and the reader never sees a gap.
async fn concurrent_sends(store: Arc<dyn Store>, tasks: usize, per_task: usize) {
    let key = room();
    let total = (tasks * per_task) as u64;
    let done = Arc::new(AtomicBool::new(false));

    let reader = {
        let (store, key, done) = (store.clone(), key.clone(), done.clone());
        tokio::spawn(async move {
            let mut seen = 0u64;
            let mut epoch = 0u32;
            let mut polls = 0u32;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let (events, version) = store.events_after(&key, seen, 37).await.unwrap();
                for e in &events {
                    assert_eq!(e.seq, seen + 1, "reader saw a gap after seq {seen}");
                    seen = e.seq;
                }
                assert!(
                    version.seq >= seen,
                    "version {version:?} older than the events read"
                );
                if version.epoch != 0 {
                    assert!(epoch == 0 || epoch == version.epoch, "epoch changed");
                    epoch = version.epoch;
                }
                polls += 1;
                if finished && seen == total {
                    return polls;
                }
                if events.is_empty() {
                    tokio::task::yield_now().await;
                }
            }
        })
    };

    let mut writers = Vec::new();
    for t in 0..tasks {
        let (store, key) = (store.clone(), key.clone());
        writers.push(tokio::spawn(async move {
            let mut seqs = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let a = store
                    .append_message(&key, message(&format!("m{t}"), &format!("c{i}"), "x"))
                    .await
                    .unwrap();
                assert!(a.created);
                assert_eq!(a.version.seq, a.event.seq);
                seqs.push(a.event.seq);
            }
            seqs
        }));
    }
    let mut all = BTreeSet::new();
    for w in writers {
        let seqs = w.await.expect("writer task");
        assert!(
            seqs.windows(2).all(|p| p[0] < p[1]),
            "one writer's seqs increase"
        );
        for s in seqs {
            assert!(all.insert(s), "duplicate seq {s}");
        }
    }
    assert_eq!(
        all.into_iter().collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    done.store(true, Ordering::SeqCst);
    let polls = reader.await.expect("reader task");
    assert!(polls > 0);
    assert_eq!(store.room_version(&key).await.unwrap().seq, total);
}
