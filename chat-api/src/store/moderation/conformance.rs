//! What every backend must do for moderation: the event and its audit line
//! written together, the audit newest first and per site, timeouts and
//! moderators per site and member. Run from the store conformance suite.

use chatty_shared::wire::{EventKind, ModerationAction};
use chatty_shared::RoomKey;

use super::{Moderation, Standing};
use crate::store::conformance::message;
use crate::store::Store;

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

fn by_moderator(action: ModerationAction, member: Option<&str>, secs: Option<u32>) -> Moderation {
    Moderation {
        moderator_id: "u_7".into(),
        moderator_nick: "Mö \"Derator\"".into(),
        action,
        member_id: member.map(str::to_owned),
        secs,
        at_ms: 1_700_000_000_123,
    }
}

/// Runs every moderation check.
pub(crate) async fn run_all(store: &dyn Store) {
    events_and_audit(store).await;
    timeouts(store).await;
    standing(store).await;
    moderators(store).await;
}

/// A moderation event is appended like any event (the room made if new),
/// its audit line beside it; the audit reads newest first, per site.
async fn events_and_audit(store: &dyn Store) {
    let site = unique("mod");
    let fresh = RoomKey::new(&site, "fresh").unwrap();
    let slow = by_moderator(ModerationAction::SlowMode, None, Some(30));
    let first = store.append_moderation(&fresh, &slow).await.unwrap();
    assert!(first.created);
    assert_eq!(first.event.seq, 1);
    assert_eq!(first.version.seq, 1);
    assert_eq!(first.event.kind, EventKind::Moderation);
    assert_eq!(first.event.text, "slow_mode:30");
    assert_eq!(first.event.member_id, "");
    assert_eq!(first.event.nick, "Mö \"Derator\"");
    assert_eq!(first.event.client_id, None);
    assert_eq!(first.event.at_ms, 1_700_000_000_123);
    assert_eq!(store.room_version(&fresh).await.unwrap(), first.version);

    let key = RoomKey::new(&site, "lobby").unwrap();
    let sent = store
        .append_message(&key, message("g1", "c1", "spam"))
        .await
        .unwrap();
    let deleted = store.delete_message(&key, sent.event.seq, 5).await.unwrap();
    let delete = by_moderator(ModerationAction::Delete, Some("g1"), None);
    store
        .add_audit(&key, &delete, deleted.event.seq)
        .await
        .unwrap();
    let timeout = by_moderator(ModerationAction::Timeout, Some("g1"), Some(600));
    let t = store.append_moderation(&key, &timeout).await.unwrap();
    assert_eq!(t.event.seq, 3, "after the message and its deletion");
    assert_eq!(t.event.member_id, "g1");
    assert_eq!(t.event.text, "timeout:600");
    let (events, version) = store.events_after(&key, 0, 10).await.unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[2], t.event);
    assert_eq!(version, t.version);
    let (recent, _) = store.recent_messages(&key, 10).await.unwrap();
    assert!(recent.is_empty(), "moderation events are not messages");
    for action in [ModerationAction::Ban, ModerationAction::Clear] {
        store
            .append_moderation(&key, &by_moderator(action, Some("g1"), None))
            .await
            .unwrap();
    }

    let audit = store.audit(&site, 100).await.unwrap();
    let actions: Vec<_> = audit.iter().map(|a| a.action).collect();
    assert_eq!(
        actions,
        [
            ModerationAction::Clear,
            ModerationAction::Ban,
            ModerationAction::Timeout,
            ModerationAction::Delete,
            ModerationAction::SlowMode,
        ],
        "newest first"
    );
    assert_eq!(audit[2], timeout.audit("lobby", Some(3)));
    assert_eq!(audit[3], delete.audit("lobby", Some(2)));
    assert_eq!(audit[4], slow.audit("fresh", Some(1)));
    assert_eq!(audit[4].member_id, None);
    let two = store.audit(&site, 2).await.unwrap();
    assert_eq!(two[..], audit[..2]);
    assert!(store.audit(&unique("mod"), 100).await.unwrap().is_empty());

    let by_owner = Moderation {
        moderator_id: String::new(),
        moderator_nick: String::new(),
        ..by_moderator(ModerationAction::Ban, Some("g2"), None)
    };
    let e = store.append_moderation(&key, &by_owner).await.unwrap();
    assert_eq!((e.event.nick.as_str(), e.event.text.as_str()), ("", "ban"));
    let newest = &store.audit(&site, 1).await.unwrap()[0];
    assert_eq!(newest.moderator_id, "");
    assert_eq!(newest.member_id.as_deref(), Some("g2"));
}

/// A timeout per site and member, replaced by the next.
async fn timeouts(store: &dyn Store) {
    let site = unique("to");
    let other = unique("to");
    assert_eq!(store.timeout_until(&site, "g1").await.unwrap(), None);
    store.set_timeout(&site, "g1", 1_000).await.unwrap();
    assert_eq!(store.timeout_until(&site, "g1").await.unwrap(), Some(1_000));
    store.set_timeout(&site, "g1", 500).await.unwrap();
    assert_eq!(store.timeout_until(&site, "g1").await.unwrap(), Some(500));
    assert_eq!(store.timeout_until(&site, "g2").await.unwrap(), None);
    assert_eq!(store.timeout_until(&other, "g1").await.unwrap(), None);
}

/// A site's bans and running timeouts in one read, per site, bounded.
async fn standing(store: &dyn Store) {
    let site = unique("st");
    let empty = store.standing(&site, 1_000, 2).await.unwrap().unwrap();
    assert_eq!(empty, Standing::default());
    store.ban(&site, "g1").await.unwrap();
    store.ban(&unique("st"), "g9").await.unwrap();
    store.set_timeout(&site, "g2", 2_000).await.unwrap();
    store.set_timeout(&site, "g3", 500).await.unwrap();
    let now = store.standing(&site, 1_000, 2).await.unwrap().unwrap();
    assert_eq!(now.banned, ["g1".to_owned()].into_iter().collect());
    assert_eq!(
        now.timed_out,
        [("g2".to_owned(), 2_000)].into_iter().collect()
    );
    store.ban(&site, "g4").await.unwrap();
    store.ban(&site, "g5").await.unwrap();
    assert_eq!(store.standing(&site, 1_000, 2).await.unwrap(), None);
    let all = store.standing(&site, 1_000, 3).await.unwrap().unwrap();
    assert_eq!(all.banned.len(), 3);
}

/// Moderators per site, recorded and forgotten (idempotently).
async fn moderators(store: &dyn Store) {
    let site = unique("mods");
    assert!(!store.is_moderator(&site, "u_7").await.unwrap());
    store.set_moderator(&site, "u_7", true).await.unwrap();
    store.set_moderator(&site, "u_7", true).await.unwrap();
    assert!(store.is_moderator(&site, "u_7").await.unwrap());
    assert!(!store.is_moderator(&unique("mods"), "u_7").await.unwrap());
    assert!(!store.is_moderator(&site, "u_8").await.unwrap());
    store.set_moderator(&site, "u_7", false).await.unwrap();
    store.set_moderator(&site, "u_7", false).await.unwrap();
    assert!(!store.is_moderator(&site, "u_7").await.unwrap());
}
