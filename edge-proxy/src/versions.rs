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
//! - **Trust**: the rule of [`chatty_shared::Freshness`], which the API
//!   nodes apply too: a part is only answered from if it was confirmed less
//!   than `max_age` ago, whatever the state of the bus. Versions only move
//!   forward within an epoch (members: only up), except that a part that has
//!   already expired is replaced by whatever the authority says next.
//! - **Forgetting**: [`VersionMap::clear`] drops everything and refuses any
//!   observation vouched for before the clear (a response to a request sent
//!   before the bus was lost).
//! - **Telling**: whoever waits for rooms to move (the held polls) is told
//!   of each part that moves forward and of each clear ([`Moves`]), after
//!   the map has changed and outside its locks.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use chatty_shared::Resource;
use chatty_shared::{members_etag, parse_etag, EtagBuf, RoomVersion, Tag};
use chatty_shared::{Freshness, Version};
use parking_lot::RwLock;

/// Number of shards (a power of two).
pub const SHARDS: usize = 64;

/// How many entries eviction samples before dropping the stalest.
const EVICTION_SAMPLES: usize = 4;

/// A point in time: milliseconds since the map was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Tick(pub u64);

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

impl Slot {
    /// The stored tick at which `part` was last confirmed (0: unknown).
    #[inline]
    fn confirmed(&self, part: Resource) -> u32 {
        match part {
            Resource::Messages => self.msg_at,
            Resource::Members => self.mem_at,
        }
    }
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

/// The flag of `part` in [`Slot::refreshing`].
fn part_flag(part: Resource) -> u8 {
    match part {
        Resource::Messages => MSG,
        Resource::Members => MEM,
    }
}

/// Told by the map when a part of a room moves to another version, and
/// when the map forgets every room.
pub trait Moves: Send + Sync {
    fn moved(&self, key: RoomHash, part: Resource);
    fn forgot(&self);
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

/// Asks the rule whether the authority's word `seen`, vouched for at
/// `at32`, is taken for a part holding `held` confirmed at `*confirmed`
/// (0: unknown); when it is, the part is confirmed from the later of the two.
fn take<V: Version>(rule: &Freshness, held: V, confirmed: &mut u32, seen: V, at32: u32) -> bool {
    let held = (*confirmed != 0).then(|| (held, age(at32, *confirmed)));
    if !rule.accepts(held, seen) {
        return false;
    }
    *confirmed = later(*confirmed, at32);
    true
}

/// The bounded per-room version map. See the module docs.
pub struct VersionMap {
    shards: Box<[RwLock<Shard>]>,
    hasher: RandomState,
    rule: Freshness,
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
    moves: OnceLock<Arc<dyn Moves>>,
}

impl std::fmt::Debug for VersionMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionMap")
            .field("max_rooms", &self.max_rooms)
            .field("max_age_ms", &self.rule.max_age_ms())
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
            rule: Freshness::new(max_age),
            max_rooms,
            start: Instant::now(),
            generation: AtomicU32::new(0),
            cleared_at: AtomicU64::new(0),
            total: AtomicUsize::new(0),
            evictions: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            moves: OnceLock::new(),
        }
    }

    /// Tells `moves` of every move and clear from now on (once per map).
    pub fn tell_moves_to(&self, moves: Arc<dyn Moves>) {
        let _ = self.moves.set(moves);
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

    /// The configured bound on entries.
    #[cfg(test)]
    pub(crate) fn max_rooms(&self) -> usize {
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

    #[inline]
    fn fresh(&self, at: u32, now: Tick) -> bool {
        at != 0 && self.rule.is_fresh(age(now.0 as u32, at))
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
        let flag = part_flag(part);
        let max_age = self.rule.max_age_ms();
        let refresh_from = max_age - max_age / 5;
        // `Some(answer)` when the slot settles it without a claim.
        let settled = |slot: &Slot| {
            let at = slot.confirmed(part);
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

    /// How long what [`VersionMap::answerable`] says of a part stays
    /// settled from `now`: until the part is due for a refresh, or while one
    /// is under way until it expires. `None` when the part is not fresh.
    pub fn settled_for(&self, key: RoomHash, part: Resource, now: Tick) -> Option<Duration> {
        let shard = self.shard(key).read();
        let slot = shard.map.get(&key.0)?;
        let at = slot.confirmed(part);
        if !self.fresh(at, now) {
            return None;
        }
        let flag = part_flag(part);
        let max_age = self.rule.max_age_ms();
        let until = if slot.refreshing & flag != 0 {
            max_age
        } else {
            max_age - max_age / 5
        };
        let left = until - age(now.0 as u32, at).max(0);
        Some(Duration::from_millis(left.max(0) as u64))
    }

    /// The authority said the room's messages were at `version` at tick `at`
    /// (for a forwarded response: when the request was sent; for a bus bump:
    /// when it arrived). Returns false when the observation was ignored.
    pub fn observe_messages(&self, key: RoomHash, version: RoomVersion, at: Tick) -> bool {
        self.observe(key, at, Resource::Messages, |slot, at32| {
            let held = RoomVersion::new(slot.epoch, slot.seq);
            let taken = take(&self.rule, held, &mut slot.msg_at, version, at32);
            if taken {
                slot.epoch = version.epoch;
                slot.seq = version.seq;
                slot.refreshing &= !MSG;
            }
            (taken, taken && held != version)
        })
    }

    /// Learns the version named by the ETag of an answer about `part` sent
    /// at `at`: what it names, or `None` for an ETag of no such version.
    pub fn observe_etag(
        &self,
        key: RoomHash,
        part: Resource,
        etag: &str,
        at: Tick,
    ) -> Option<Known> {
        match (parse_etag(etag)?, part) {
            (Tag::Room(v), Resource::Messages) => {
                self.observe_messages(key, v, at);
                Some(Known::Messages(v))
            }
            (Tag::Members(v), Resource::Members) => {
                self.observe_members(key, v, at);
                Some(Known::Members(v))
            }
            _ => None,
        }
    }

    /// The authority said the room's members list was at `version` at `at`.
    /// Returns false when the observation was ignored.
    pub fn observe_members(&self, key: RoomHash, version: u64, at: Tick) -> bool {
        self.observe(key, at, Resource::Members, |slot, at32| {
            let held = slot.members;
            let taken = take(&self.rule, held, &mut slot.mem_at, version, at32);
            if taken {
                slot.members = version;
                slot.refreshing &= !MEM;
            }
            (taken, taken && held != version)
        })
    }

    /// Finds or makes the room's slot and lets `apply` update `part` of it
    /// with an observation vouched for at `at` (saying whether it was taken
    /// and whether the part moved); false when it was ignored (vouched for
    /// before the last clear, or no room for the slot).
    fn observe(
        &self,
        key: RoomHash,
        at: Tick,
        part: Resource,
        apply: impl FnOnce(&mut Slot, u32) -> (bool, bool),
    ) -> bool {
        if at.0 < self.cleared_at.load(Ordering::Acquire) {
            return false;
        }
        let at32 = stored(at);
        let mut shard = self.shard(key).write();
        let Some(evicted) = self.make_room(&mut shard, key, at32) else {
            return false;
        };
        let (taken, moved) = apply(shard.slot_mut(key.0), at32);
        drop(shard);
        if evicted {
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        if let (true, Some(moves)) = (moved, self.moves.get()) {
            moves.moved(key, part);
        }
        taken
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
        if let Some(moves) = self.moves.get() {
            moves.forgot();
        }
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
mod tests;
