//! The version map's unit tests.

use super::*;

/// Lookups for tests (here and in the subscriber's), beside the one the
/// proxy makes ([`VersionMap::answerable`]).
impl VersionMap {
    /// The room's messages version, if known and confirmed within max-age.
    pub(crate) fn fresh_messages(&self, site: &str, room: &str, now: Tick) -> Option<RoomVersion> {
        self.fresh_messages_by_hash(self.room_hash(site, room), now)
    }

    /// [`Self::fresh_messages`] for a hash computed earlier.
    pub(crate) fn fresh_messages_by_hash(&self, key: RoomHash, now: Tick) -> Option<RoomVersion> {
        match self.fresh_part(key, Resource::Messages, now)? {
            Known::Messages(v) => Some(v),
            Known::Members(_) => None,
        }
    }

    /// The room's members version, if known and confirmed within max-age.
    pub(crate) fn fresh_members(&self, site: &str, room: &str, now: Tick) -> Option<u64> {
        self.fresh_members_by_hash(self.room_hash(site, room), now)
    }

    /// [`Self::fresh_members`] for a hash computed earlier.
    pub(crate) fn fresh_members_by_hash(&self, key: RoomHash, now: Tick) -> Option<u64> {
        match self.fresh_part(key, Resource::Members, now)? {
            Known::Members(v) => Some(v),
            Known::Messages(_) => None,
        }
    }

    /// One part of a room, if known and confirmed within max-age.
    fn fresh_part(&self, key: RoomHash, part: Resource, now: Tick) -> Option<Known> {
        let shard = self.shard(key).read();
        let slot = shard.map.get(&key.0)?;
        self.fresh(slot.confirmed(part), now)
            .then(|| Known::of(slot, part))
    }
}

const AGE: Duration = Duration::from_secs(5);

fn v(epoch: u32, seq: u64) -> RoomVersion {
    RoomVersion::new(epoch, seq)
}

fn map() -> VersionMap {
    VersionMap::new(1000, AGE)
}

#[test]
fn unknown_room_is_none() {
    let m = map();
    assert_eq!(m.fresh_messages("demo", "lobby", Tick(10)), None);
    assert_eq!(m.fresh_members("demo", "lobby", Tick(10)), None);
    assert!(m.is_empty());
}

#[test]
fn one_caller_refreshes_an_entry_before_it_expires() {
    let m = map();
    let k = m.room_hash("demo", "lobby");
    m.observe_messages(k, v(1, 3), Tick(1000));
    m.observe_members(k, 4, Tick(1000));
    let (claim, leave) = (Refresh::Claim, Refresh::Leave);
    let msgs = |t: u64, r: Refresh| m.answerable(k, Resource::Messages, Tick(t), r);
    let mems = |t: u64, r: Refresh| m.answerable(k, Resource::Members, Tick(t), r);
    let known = Some(Known::Messages(v(1, 3)));
    // Young: answered, nobody refreshes.
    assert_eq!(msgs(4999, claim), known);
    // The last fifth of max-age: the first caller that claims goes to
    // the authority; a caller that leaves it, or any later one, is
    // still answered.
    assert_eq!(msgs(5000, leave), None);
    assert_eq!(msgs(5000, claim), None);
    assert_eq!(msgs(5001, claim), known);
    assert_eq!(msgs(5001, leave), known);
    // The parts are refreshed apart.
    assert_eq!(mems(5002, claim), None);
    assert_eq!(mems(5003, claim), Some(Known::Members(4)));
    // The refresh confirms the entry: young again, refreshable again.
    m.observe_messages(k, v(1, 3), Tick(5010));
    assert_eq!(msgs(8000, claim), known);
    assert_eq!(msgs(9010, claim), None);
    assert_eq!(msgs(9011, claim), known);
    // A refresh that never comes back: past max-age nobody is answered.
    assert_eq!(msgs(10_010, claim), None);
    assert_eq!(msgs(10_011, leave), None);
    assert_eq!(mems(6000, leave), None);
}

#[test]
fn hash_separates_site_and_room() {
    let m = map();
    assert_ne!(m.room_hash("ab", "c"), m.room_hash("a", "bc"));
    assert_eq!(m.room_hash("demo", "lobby"), m.room_hash("demo", "lobby"));
    // A fresh map has a fresh key.
    assert_ne!(
        map().room_hash("demo", "lobby"),
        m.room_hash("demo", "lobby")
    );
}

#[test]
fn versions_only_move_forward() {
    let m = map();
    let k = m.room_hash("demo", "lobby");
    assert!(m.observe_messages(k, v(1, 5), Tick(100)));
    assert!(m.observe_messages(k, v(1, 7), Tick(110)));
    // A late, older answer (reordered bump or slow response).
    assert!(!m.observe_messages(k, v(1, 6), Tick(120)));
    assert_eq!(m.fresh_messages("demo", "lobby", Tick(130)), Some(v(1, 7)));
    // A duplicate bump confirms again.
    assert!(m.observe_messages(k, v(1, 7), Tick(4000)));
    assert_eq!(m.fresh_messages("demo", "lobby", Tick(8000)), Some(v(1, 7)));

    assert!(m.observe_members(k, 3, Tick(100)));
    assert!(!m.observe_members(k, 2, Tick(110)));
    assert!(m.observe_members(k, 3, Tick(120)));
    assert!(m.observe_members(k, 9, Tick(130)));
    assert_eq!(m.fresh_members("demo", "lobby", Tick(140)), Some(9));
    // Members and messages are independent parts of one entry.
    assert_eq!(m.len(), 1);
}

#[test]
fn new_epoch_wins_only_when_not_older_than_the_confirmation() {
    let m = map();
    let k = m.room_hash("demo", "lobby");
    m.observe_messages(k, v(1, 50), Tick(1000));
    // A response to a request sent before the last confirmation.
    assert!(!m.observe_messages(k, v(2, 1), Tick(900)));
    assert_eq!(m.fresh_messages_by_hash(k, Tick(1100)), Some(v(1, 50)));
    // A bump heard afterwards: the room's history was reset.
    assert!(m.observe_messages(k, v(2, 1), Tick(1200)));
    assert_eq!(m.fresh_messages_by_hash(k, Tick(1300)), Some(v(2, 1)));
    // The old epoch cannot come back with an older vouching time.
    assert!(!m.observe_messages(k, v(1, 51), Tick(1150)));
    assert_eq!(m.fresh_messages_by_hash(k, Tick(1300)), Some(v(2, 1)));
}

#[test]
fn later_version_keeps_the_latest_confirmation() {
    let m = map();
    let k = m.room_hash("demo", "lobby");
    m.observe_messages(k, v(1, 5), Tick(3000));
    // Seq 6 vouched at 1000 must postdate seq 5 seen at 3000.
    m.observe_messages(k, v(1, 6), Tick(1000));
    assert_eq!(m.fresh_messages_by_hash(k, Tick(7500)), Some(v(1, 6)));
    assert_eq!(m.fresh_messages_by_hash(k, Tick(8000)), None);
}

#[test]
fn max_age_bounds_trust() {
    let m = map();
    let k = m.room_hash("demo", "lobby");
    m.observe_messages(k, v(1, 5), Tick(1000));
    m.observe_members(k, 4, Tick(1000));
    assert_eq!(m.fresh_messages_by_hash(k, Tick(5999)), Some(v(1, 5)));
    assert_eq!(m.fresh_messages_by_hash(k, Tick(6000)), None);
    assert_eq!(m.fresh_members_by_hash(k, Tick(5999)), Some(4));
    assert_eq!(m.fresh_members_by_hash(k, Tick(6000)), None);
    // Once expired, the next word of the authority wins, even backwards
    // (a members counter that restarted, say).
    assert!(m.observe_members(k, 1, Tick(7000)));
    assert_eq!(m.fresh_members_by_hash(k, Tick(7001)), Some(1));
    assert!(m.observe_messages(k, v(1, 3), Tick(7000)));
    assert_eq!(m.fresh_messages_by_hash(k, Tick(7001)), Some(v(1, 3)));
}

#[test]
fn clear_forgets_everything_and_refuses_older_observations() {
    let m = map();
    let a = m.room_hash("demo", "a");
    let b = m.room_hash("demo", "b");
    m.observe_messages(a, v(1, 1), Tick(10));
    m.observe_members(b, 2, Tick(10));
    assert_eq!(m.len(), 2);
    m.clear(Tick(100));
    assert!(m.is_empty());
    assert_eq!(m.resets(), 1);
    assert_eq!(m.fresh_messages_by_hash(a, Tick(101)), None);
    // A response to a request sent before the clear is not trusted.
    assert!(!m.observe_messages(a, v(1, 2), Tick(99)));
    assert!(m.is_empty());
    assert!(m.observe_messages(a, v(1, 2), Tick(100)));
    assert_eq!(m.fresh_messages_by_hash(a, Tick(101)), Some(v(1, 2)));
}

#[test]
fn eviction_keeps_the_bound_and_counts() {
    let m = VersionMap::new(SHARDS * 4, AGE);
    assert_eq!(m.max_rooms(), SHARDS * 4);
    for i in 0..10_000u64 {
        let k = m.room_hash("demo", &format!("r{i}"));
        m.observe_messages(k, v(1, i), Tick(i));
    }
    assert_eq!(m.len(), SHARDS * 4);
    assert_eq!(m.evictions(), 10_000 - (SHARDS as u64) * 4);
    // The most recent room is present: a new entry is never its own victim.
    let last = m.room_hash("demo", "r9999");
    assert_eq!(
        m.fresh_messages_by_hash(last, Tick(10_000)),
        Some(v(1, 9999))
    );
}

#[test]
fn eviction_prefers_stale_entries() {
    // A full shard of rooms confirmed long ago and one hot room confirmed
    // just now: evicting all but one leaves the hot room.
    let mut shard = Shard::new(8, 0x5eed);
    for key in 1..=7u64 {
        shard.slot_mut(key).msg_at = 10 + key as u32;
    }
    shard.slot_mut(100).msg_at = 5000;
    for _ in 0..7 {
        assert!(shard.evict_one(5000));
    }
    assert_eq!(shard.keys, vec![100]);
    assert_eq!(shard.map.len(), 1);
    assert_eq!(shard.map[&100].idx, 0);
}

#[test]
fn concurrent_readers_and_writers() {
    let m = std::sync::Arc::new(map());
    let k = m.room_hash("demo", "lobby");
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let m = m.clone();
            std::thread::spawn(move || {
                for s in 0..10_000u64 {
                    m.observe_messages(k, v(1, s * 4 + t), Tick(s));
                }
            })
        })
        .collect();
    let mut last = 0;
    for _ in 0..10_000 {
        if let Some(seen) = m.fresh_messages_by_hash(k, Tick(0)) {
            assert!(seen.seq >= last, "went back from {last} to {}", seen.seq);
            last = seen.seq;
        }
    }
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(
        m.fresh_messages_by_hash(k, Tick(10_000)).map(|v| v.seq),
        Some(39_999)
    );
}

/// Records what the map tells of moves.
#[derive(Default)]
struct Told(parking_lot::Mutex<Vec<Option<(RoomHash, Resource)>>>);

impl Moves for Told {
    fn moved(&self, key: RoomHash, part: Resource) {
        self.0.lock().push(Some((key, part)));
    }
    fn forgot(&self) {
        self.0.lock().push(None);
    }
}

#[test]
fn tells_moves_and_clears_but_not_confirmations() {
    let m = map();
    let told = Arc::new(Told::default());
    m.tell_moves_to(told.clone());
    let k = m.room_hash("demo", "lobby");
    m.observe_messages(k, v(1, 5), Tick(100));
    m.observe_messages(k, v(1, 5), Tick(200)); // a confirmation
    m.observe_messages(k, v(1, 4), Tick(300)); // older: ignored
    m.observe_members(k, 2, Tick(300));
    m.observe_members(k, 2, Tick(400));
    m.observe_messages(k, v(1, 6), Tick(500));
    m.clear(Tick(600));
    let (msgs, mems) = (Resource::Messages, Resource::Members);
    assert_eq!(
        *told.0.lock(),
        [Some((k, msgs)), Some((k, mems)), Some((k, msgs)), None]
    );
}

#[test]
fn settled_until_the_refresh_or_while_refreshing_until_expiry() {
    // max-age 5 s: a refresh is due from 4 s.
    let m = map();
    let k = m.room_hash("demo", "lobby");
    let msgs = Resource::Messages;
    let ms = Duration::from_millis;
    assert_eq!(m.settled_for(k, msgs, Tick(0)), None, "unknown");
    m.observe_messages(k, v(1, 5), Tick(1000));
    assert_eq!(m.settled_for(k, msgs, Tick(1000)), Some(ms(4000)));
    assert_eq!(m.settled_for(k, msgs, Tick(4500)), Some(ms(500)));
    assert_eq!(m.settled_for(k, msgs, Tick(5500)), Some(ms(0)));
    assert_eq!(m.answerable(k, msgs, Tick(5500), Refresh::Claim), None);
    assert_eq!(m.settled_for(k, msgs, Tick(5500)), Some(ms(500)));
    assert_eq!(m.settled_for(k, msgs, Tick(6000)), None, "expired");
    assert_eq!(m.settled_for(k, Resource::Members, Tick(1000)), None);
}
