//! The per-room version map: what the edge believes each room's current
//! messages and members versions are, and since when. A plain type (no
//! pingora), bounded in entries, safe against crafted room names.
//!
//! # Shape
//!
//! - **Key**: a `u64` SipHash of `(site, room)` under a per-process random
//!   key ([`std::hash::RandomState`]), so clients cannot aim two room names at
//!   one key or at one shard. Two real rooms sharing a key is a 64-bit
//!   accident (about 3·10⁻⁸ at a million rooms); it can cost at most one
//!   wrong 304 within max-age, like a lost publish.
//! - **Value**: the messages [`RoomVersion`], the members version, and for
//!   each part the tick (ms since the map started) at which the authority (a
//!   forwarded response or a bus bump) last vouched for it. 32 bytes.
//! - **Shards**: 64 `parking_lot::RwLock<HashMap>`, chosen by bits of the
//!   keyed hash, so readers never share a global lock.
//! - **Bound**: `max_rooms` entries in all (a shared count), and at most
//!   twice its fair share in any one shard. When the map is full, inserting
//!   a new room evicts, from the new room's shard, the stalest (least
//!   recently confirmed) of four entries sampled at random: an approximate
//!   LRU, O(1), in the manner of Redis. Rooms that are actually polled are re-confirmed
//!   at least every max-age, so they survive a flood of invented room names,
//!   and sampling at random means no client can choose which room goes.
//! - **Trust**: a part is only answered from if it was confirmed less than
//!   `max_age` ago, whatever the state of the bus. Versions only move
//!   forward within an epoch (members: only up), except that a part that has
//!   already expired is replaced by whatever the authority says next.
//! - **Forgetting**: [`VersionMap::clear`] drops everything and refuses any
//!   observation vouched for before the clear (a response to a request sent
//!   before the bus was lost).

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chatty_shared::etag::{members_etag, EtagBuf, RoomVersion};
use chatty_shared::room::Resource;
use parking_lot::RwLock;

/// Number of shards (a power of two).
pub const SHARDS: usize = 64;

/// How many entries eviction samples before dropping the stalest.
const EVICTION_SAMPLES: usize = 4;

/// A point in time: milliseconds since the map was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Tick(pub u64);

impl Tick {
    /// The tick `ms` milliseconds later.
    pub fn plus_ms(self, ms: u64) -> Tick {
        Tick(self.0 + ms)
    }
}

/// The keyed hash of a `(site, room)` pair, computed once per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoomHash(pub u64);

/// One room's entry. `*_at` hold the low 32 bits of the confirming tick; 0
/// means the part is unknown.
#[derive(Debug, Clone, Copy)]
struct Slot {
    seq: u64,
    members: u64,
    epoch: u32,
    msg_at: u32,
    mem_at: u32,
    /// Position of this key in the shard's `keys` (for O(1) random eviction).
    idx: u32,
    /// Parts ([`MSG`], [`MEM`]) for which one request was let through to
    /// re-confirm them before max-age runs out; cleared by the next
    /// confirmation.
    refreshing: u8,
}

/// What the map vouches for about one part of a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    Messages(RoomVersion),
    Members(u64),
}

impl Known {
    fn of(slot: &Slot, part: Resource) -> Known {
        match part {
            Resource::Messages => Known::Messages(RoomVersion::new(slot.epoch, slot.seq)),
            Resource::Members => Known::Members(slot.members),
        }
    }

    /// The ETag an answer with this version carries.
    pub fn etag(&self) -> EtagBuf {
        match *self {
            Known::Messages(v) => v.etag(),
            Known::Members(v) => members_etag(v),
        }
    }
}

/// Whether a caller of [`VersionMap::answerable`] that finds the
/// entry due for a refresh takes it on (its request will reach the
/// authority) or leaves it to a later caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    Claim,
    Leave,
}

/// The messages part, in [`Slot::refreshing`].
const MSG: u8 = 1;
/// The members part, in [`Slot::refreshing`].
const MEM: u8 = 2;

/// The key is already a keyed SipHash: hashing it again would only cost time.
#[derive(Default)]
pub(crate) struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type SlotMap = HashMap<u64, Slot, BuildHasherDefault<IdentityHasher>>;

struct Shard {
    map: SlotMap,
    /// Every key of `map`, in no order, so eviction can sample at random.
    keys: Vec<u64>,
    cap: usize,
    rng: u64,
}

impl Shard {
    fn new(cap: usize, seed: u64) -> Self {
        Self {
            map: SlotMap::default(),
            keys: Vec::new(),
            cap,
            rng: seed | 1,
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: enough to spread samples; the seed is per process.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Drops the stalest of a few random entries. Returns true if one went.
    fn evict_one(&mut self, now32: u32) -> bool {
        if self.keys.is_empty() {
            return false;
        }
        let mut victim = None;
        let mut worst_age = i64::MIN;
        for _ in 0..EVICTION_SAMPLES {
            let i = (self.next_random() % self.keys.len() as u64) as usize;
            let key = self.keys[i];
            let Some(slot) = self.map.get(&key) else {
                continue;
            };
            let age = last_confirmed_age(slot, now32);
            if age > worst_age {
                worst_age = age;
                victim = Some(key);
            }
        }
        match victim {
            Some(key) => {
                self.remove(key);
                true
            }
            None => false,
        }
    }

    fn remove(&mut self, key: u64) {
        let Some(slot) = self.map.remove(&key) else {
            return;
        };
        let idx = slot.idx as usize;
        self.keys.swap_remove(idx);
        if let Some(&moved) = self.keys.get(idx) {
            if let Some(s) = self.map.get_mut(&moved) {
                s.idx = idx as u32;
            }
        }
    }

    /// The slot for `key`, inserting an empty one if needed (the caller
    /// makes room first).
    fn slot_mut(&mut self, key: u64) -> &mut Slot {
        if !self.map.contains_key(&key) {
            if self.keys.len() == self.keys.capacity() {
                // Grow by doubling, but never past the shard's capacity.
                let target = (self.keys.capacity() * 2).max(16).min(self.cap.max(1));
                self.keys
                    .reserve_exact(target.saturating_sub(self.keys.len()).max(1));
            }
            let idx = self.keys.len() as u32;
            self.keys.push(key);
            self.map.insert(
                key,
                Slot {
                    seq: 0,
                    members: 0,
                    epoch: 0,
                    msg_at: 0,
                    mem_at: 0,
                    idx,
                    refreshing: 0,
                },
            );
        }
        self.map.get_mut(&key).expect("inserted above")
    }
}

/// Signed age in ms of a confirmation `at` seen from `now` (both low 32 bits
/// of ticks of one 2³¹ ms generation, so the difference fits an i32).
fn age(now32: u32, at: u32) -> i64 {
    i64::from(now32.wrapping_sub(at) as i32)
}

fn last_confirmed_age(slot: &Slot, now32: u32) -> i64 {
    let msg = if slot.msg_at == 0 {
        i64::MAX
    } else {
        age(now32, slot.msg_at)
    };
    let mem = if slot.mem_at == 0 {
        i64::MAX
    } else {
        age(now32, slot.mem_at)
    };
    msg.min(mem)
}

/// The stored form of a tick: its low 32 bits, never 0 (0 means unknown; a
/// tick whose low bits are 0 is stored one step older, which is safe).
fn stored(t: Tick) -> u32 {
    match t.0 as u32 {
        0 => u32::MAX,
        n => n,
    }
}

/// The later of two stored confirmations.
fn later(a: u32, b: u32) -> u32 {
    if a == 0 || age(b, a) > 0 {
        b
    } else {
        a
    }
}

/// The bounded per-room version map. See the module docs.
pub struct VersionMap {
    shards: Box<[RwLock<Shard>]>,
    hasher: RandomState,
    max_age_ms: i64,
    max_rooms: usize,
    start: Instant,
    /// `tick >> 31` of the last tick handed out by [`VersionMap::now`]; the
    /// map is cleared when it changes (every 24.8 days) so stored 32-bit
    /// ticks never compare across generations.
    generation: AtomicU32,
    cleared_at: AtomicU64,
    /// Entries held, across shards.
    total: AtomicUsize,
    evictions: AtomicU64,
    resets: AtomicU64,
}

impl std::fmt::Debug for VersionMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionMap")
            .field("max_rooms", &self.max_rooms)
            .field("max_age_ms", &self.max_age_ms)
            .field("entries", &self.len())
            .finish()
    }
}

impl VersionMap {
    /// A map of at most `max_rooms` rooms (at least one per shard) whose
    /// entries are trusted for `max_age` after each confirmation.
    pub fn new(max_rooms: usize, max_age: Duration) -> Self {
        let max_rooms = max_rooms.max(SHARDS);
        let hasher = RandomState::new();
        let shards = (0..SHARDS)
            .map(|i| {
                // A shard may hold twice its fair share; the map as a whole
                // holds `max_rooms`.
                let cap = 2 * max_rooms.div_ceil(SHARDS);
                let seed = hasher.hash_one(i as u64 ^ 0x9e37_79b9_7f4a_7c15);
                RwLock::new(Shard::new(cap, seed))
            })
            .collect();
        Self {
            shards,
            hasher,
            max_age_ms: max_age.as_millis().min(i32::MAX as u128) as i64,
            max_rooms,
            start: Instant::now(),
            generation: AtomicU32::new(0),
            cleared_at: AtomicU64::new(0),
            total: AtomicUsize::new(0),
            evictions: AtomicU64::new(0),
            resets: AtomicU64::new(0),
        }
    }

    /// The current tick from the monotonic clock.
    pub fn now(&self) -> Tick {
        let t = Tick(self.start.elapsed().as_millis() as u64);
        let generation = (t.0 >> 31) as u32;
        if self.generation.load(Ordering::Relaxed) != generation
            && self.generation.swap(generation, Ordering::AcqRel) != generation
        {
            self.clear(t);
        }
        t
    }

    /// The tick of a moment measured by the caller (e.g. when a request was
    /// sent upstream).
    pub fn tick_at(&self, instant: Instant) -> Tick {
        Tick(instant.saturating_duration_since(self.start).as_millis() as u64)
    }

    /// The configured bound on entries.
    pub fn max_rooms(&self) -> usize {
        self.max_rooms
    }

    /// The keyed hash of a room, without allocating.
    pub fn room_hash(&self, site: &str, room: &str) -> RoomHash {
        let mut h = self.hasher.build_hasher();
        h.write(site.as_bytes());
        h.write_u8(0xff); // never in a site id: `ab`+`c` differs from `a`+`bc`
        h.write(room.as_bytes());
        RoomHash(h.finish())
    }

    fn shard_index(&self, key: RoomHash) -> usize {
        // Middle bits: the HashMap uses the low bits for the bucket and the
        // top seven as its tag, so neither is constant within a shard.
        ((key.0 >> 32) as usize) & (SHARDS - 1)
    }

    fn shard(&self, key: RoomHash) -> &RwLock<Shard> {
        &self.shards[self.shard_index(key)]
    }

    fn fresh(&self, at: u32, now: Tick) -> bool {
        at != 0 && age(now.0 as u32, at) < self.max_age_ms
    }

    /// The room's messages version, if known and confirmed within max-age.
    pub fn fresh_messages(&self, site: &str, room: &str, now: Tick) -> Option<RoomVersion> {
        self.fresh_messages_by_hash(self.room_hash(site, room), now)
    }

    /// [`Self::fresh_messages`] for a hash computed earlier.
    pub fn fresh_messages_by_hash(&self, key: RoomHash, now: Tick) -> Option<RoomVersion> {
        let shard = self.shard(key).read();
        let slot = shard.map.get(&key.0)?;
        self.fresh(slot.msg_at, now)
            .then(|| RoomVersion::new(slot.epoch, slot.seq))
    }

    /// The room's members version, if known and confirmed within max-age.
    pub fn fresh_members(&self, site: &str, room: &str, now: Tick) -> Option<u64> {
        self.fresh_members_by_hash(self.room_hash(site, room), now)
    }

    /// [`Self::fresh_members`] for a hash computed earlier.
    pub fn fresh_members_by_hash(&self, key: RoomHash, now: Tick) -> Option<u64> {
        let shard = self.shard(key).read();
        let slot = shard.map.get(&key.0)?;
        self.fresh(slot.mem_at, now).then_some(slot.members)
    }

    /// What the map vouches for about one part of a room, if it may be
    /// answered from memory now: the part is known and was confirmed within
    /// max-age, except in the last fifth of max-age while nobody is
    /// re-confirming it. Then `None`, and with [`Refresh::Claim`] the caller
    /// becomes the one re-confirming it: its request goes to the authority
    /// while every other caller is still answered from memory. One request
    /// per room per max-age, instead of every request in flight at the
    /// moment of expiry.
    pub fn answerable(
        &self,
        key: RoomHash,
        part: Resource,
        now: Tick,
        refresh: Refresh,
    ) -> Option<Known> {
        let (flag, confirmed): (u8, fn(&Slot) -> u32) = match part {
            Resource::Messages => (MSG, |s| s.msg_at),
            Resource::Members => (MEM, |s| s.mem_at),
        };
        let refresh_from = self.max_age_ms - self.max_age_ms / 5;
        // `Some(answer)` when the slot settles it without a claim.
        let settled = |slot: &Slot| {
            let at = confirmed(slot);
            if !self.fresh(at, now) {
                Some(None)
            } else if age(now.0 as u32, at) < refresh_from || slot.refreshing & flag != 0 {
                Some(Some(Known::of(slot, part)))
            } else {
                None
            }
        };
        if let Some(answer) = settled(self.shard(key).read().map.get(&key.0)?) {
            return answer;
        }
        if refresh == Refresh::Leave {
            return None;
        }
        // Due for a refresh and nobody is refreshing: this caller does.
        let mut shard = self.shard(key).write();
        let slot = shard.map.get_mut(&key.0)?;
        if let Some(answer) = settled(slot) {
            return answer;
        }
        slot.refreshing |= flag;
        None
    }

    /// The authority said the room's messages were at `version` at tick `at`
    /// (for a forwarded response: when the request was sent; for a bus bump:
    /// when it arrived). Returns false when the observation was ignored.
    pub fn observe_messages(&self, key: RoomHash, version: RoomVersion, at: Tick) -> bool {
        if at.0 < self.cleared_at.load(Ordering::Acquire) {
            return false;
        }
        let at32 = stored(at);
        let mut shard = self.shard(key).write();
        let Some(evicted) = self.make_room(&mut shard, key, at32) else {
            return false;
        };
        let slot = shard.slot_mut(key.0);
        let current = RoomVersion::new(slot.epoch, slot.seq);
        let known = slot.msg_at != 0;
        let accepted = if !known || age(at32, slot.msg_at) >= self.max_age_ms {
            // Unknown or expired: whatever the authority says now.
            slot.msg_at = at32;
            Some(version)
        } else if version == current {
            slot.msg_at = later(slot.msg_at, at32);
            None
        } else if version.epoch == current.epoch {
            if version.seq > current.seq {
                // Seen at `at` or later, and after `current` was: see docs.
                slot.msg_at = later(slot.msg_at, at32);
                Some(version)
            } else {
                None
            }
        } else if age(at32, slot.msg_at) >= 0 {
            // A new epoch only wins if nothing was confirmed after it.
            slot.msg_at = at32;
            Some(version)
        } else {
            None
        };
        let changed = accepted.is_some() || version == current;
        if let Some(v) = accepted {
            slot.epoch = v.epoch;
            slot.seq = v.seq;
        }
        if changed {
            slot.refreshing &= !MSG;
        }
        drop(shard);
        if evicted {
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        changed
    }

    /// The authority said the room's members list was at `version` at `at`.
    /// Returns false when the observation was ignored.
    pub fn observe_members(&self, key: RoomHash, version: u64, at: Tick) -> bool {
        if at.0 < self.cleared_at.load(Ordering::Acquire) {
            return false;
        }
        let at32 = stored(at);
        let mut shard = self.shard(key).write();
        let Some(evicted) = self.make_room(&mut shard, key, at32) else {
            return false;
        };
        let slot = shard.slot_mut(key.0);
        let known = slot.mem_at != 0;
        let changed = if !known || age(at32, slot.mem_at) >= self.max_age_ms {
            slot.members = version;
            slot.mem_at = at32;
            true
        } else if version >= slot.members {
            slot.members = version;
            slot.mem_at = later(slot.mem_at, at32);
            true
        } else {
            false
        };
        if changed {
            slot.refreshing &= !MEM;
        }
        drop(shard);
        if evicted {
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        changed
    }

    /// Before `key` is inserted into `shard`: takes a place in the map, or
    /// when the map or the shard is full evicts one entry — from this shard,
    /// or when it is empty from the next shard not busy — and takes its
    /// place. `Some(evicted)`, or `None` when the map is full and nothing
    /// could be evicted (the room is then not learned: it is forwarded).
    /// The count never passes `max_rooms`, not even for a moment.
    fn make_room(&self, shard: &mut Shard, key: RoomHash, now32: u32) -> Option<bool> {
        if shard.map.contains_key(&key.0) {
            return Some(false);
        }
        let reserved = self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_rooms).then_some(n + 1)
            })
            .is_ok();
        if reserved && shard.map.len() < shard.cap {
            return Some(false);
        }
        let mut evicted = shard.evict_one(now32);
        if !evicted {
            // Never wait on a second lock while holding one: skip busy shards.
            let home = self.shard_index(key);
            evicted = (1..SHARDS).any(|i| {
                self.shards[(home + i) % SHARDS]
                    .try_write()
                    .is_some_and(|mut other| other.evict_one(now32))
            });
        }
        match (reserved, evicted) {
            // A place taken and one freed: give the new one back.
            (true, true) => {
                self.total.fetch_sub(1, Ordering::AcqRel);
                Some(true)
            }
            // Past this shard's share, within the map's bound.
            (true, false) => Some(false),
            // The new room takes the evicted one's place.
            (false, true) => Some(true),
            (false, false) => None,
        }
    }

    /// Forgets every room at once, and any observation vouched for before
    /// `now`.
    pub fn clear(&self, now: Tick) {
        self.cleared_at.fetch_max(now.0, Ordering::AcqRel);
        for shard in self.shards.iter() {
            let mut shard = shard.write();
            let held = shard.map.len();
            shard.map.clear();
            shard.keys.clear();
            self.total.fetch_sub(held, Ordering::AcqRel);
        }
        self.resets.fetch_add(1, Ordering::Relaxed);
    }

    /// Number of rooms held.
    pub fn len(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// True when no room is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries evicted to stay within `max_rooms`, since start.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Times the whole map was forgotten, since start.
    pub fn resets(&self) -> u64 {
        self.resets.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
