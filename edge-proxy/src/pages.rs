//! The page cache: recent `GET …/messages?after=N` answers kept at the edge,
//! so that when a message arrives, the guests of a room read it from the
//! edge and only the first of them from an API node. A plain type (no
//! pingora), bounded in bytes.
//!
//! # Why it is safe
//!
//! A page is the room's events after `after`, up to version `V`, answered
//! with ETag `V`. The log is append-only (a deletion is an event too), so
//! `(room, after, V)` always stands for the same bytes. The proxy serves a
//! page only while `V` is the room's current version in the
//! [`VersionMap`](crate::versions::VersionMap), confirmed within max-age:
//! a cached page is exactly as fresh as a 304 would be, never staler.
//! Partial pages (`more`) carry no ETag and are never kept.
//!
//! # Bounds
//!
//! A room keeps only pages of the newest version it was given, at most
//! [`PAGES_PER_ROOM`] of them (one per `after`); pages above
//! [`MAX_PAGE_BYTES`] are not kept; and the bytes of all pages stay within
//! the configured budget, split evenly over the shards. Past its share a
//! shard drops whole rooms, in the order of its keyed hash table (which no
//! client can aim at). Only answers the API gave with an ETag are kept, so
//! invented room names (404s) never take space. Nothing needs dropping when
//! the bus is lost: the version map forgets, and with it every page's
//! licence to be served.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use chatty_shared::RoomVersion;
use parking_lot::Mutex;

use crate::versions::{IdentityHasher, RoomHash, SHARDS};

/// Largest page kept (a full page of long messages is ~200 KiB; such pages
/// are rare and the API answers them itself).
pub const MAX_PAGE_BYTES: usize = 64 * 1024;

/// Distinct `after` values kept per room: guests a message or two behind.
pub const PAGES_PER_ROOM: usize = 4;

#[derive(Debug)]
struct RoomPages {
    version: RoomVersion,
    /// `(after, body)`, oldest first.
    pages: Vec<(u64, Bytes)>,
}

impl RoomPages {
    fn bytes(&self) -> usize {
        self.pages.iter().map(|(_, b)| b.len()).sum()
    }
}

#[derive(Debug, Default)]
struct Shard {
    rooms: HashMap<u64, RoomPages, BuildHasherDefault<IdentityHasher>>,
    bytes: usize,
}

/// The bounded page cache. See the module docs.
#[derive(Debug)]
pub struct PageCache {
    shards: Box<[Mutex<Shard>]>,
    shard_budget: usize,
    max_page: usize,
    bytes: AtomicUsize,
}

impl PageCache {
    /// A cache holding at most `max_bytes` of page bodies (0: keeps nothing).
    pub fn new(max_bytes: usize) -> Self {
        Self::with_limit(max_bytes, MAX_PAGE_BYTES)
    }

    /// A cache of at most `max_bytes`, keeping no body above `max_page`.
    pub fn with_limit(max_bytes: usize, max_page: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            shard_budget: max_bytes / SHARDS,
            max_page,
            bytes: AtomicUsize::new(0),
        }
    }

    fn shard(&self, key: RoomHash) -> &Mutex<Shard> {
        // The version map picks its shard from the low bits; the high bits
        // spread a room's pages independently of its map shard's lock.
        &self.shards[(key.0 >> 58) as usize % SHARDS]
    }

    /// The page of `after` at `current`, the room's current version.
    pub fn get(&self, key: RoomHash, after: u64, current: RoomVersion) -> Option<Bytes> {
        let shard = self.shard(key).lock();
        let room = shard.rooms.get(&key.0)?;
        if room.version != current {
            return None;
        }
        room.pages
            .iter()
            .find(|(a, _)| *a == after)
            .map(|(_, body)| body.clone())
    }

    /// Keeps the page of `after` at `version`; a page of a version older
    /// than the room's newest is dropped.
    pub fn put(&self, key: RoomHash, after: u64, version: RoomVersion, body: Bytes) {
        let size = body.len();
        if size > self.max_page || size > self.shard_budget {
            return;
        }
        let mut shard = self.shard(key).lock();
        let shard = &mut *shard;
        let before = shard.bytes;
        let room = shard.rooms.entry(key.0).or_insert_with(|| RoomPages {
            version,
            pages: Vec::new(),
        });
        if room.version != version {
            // An older page of the same log is of no use; a new epoch (the
            // room's log started over) replaces whatever was kept.
            if room.version.epoch == version.epoch && room.version.seq > version.seq {
                return;
            }
            shard.bytes -= room.bytes();
            room.version = version;
            room.pages.clear();
        }
        if room.pages.iter().any(|(a, _)| *a == after) {
            return;
        }
        if room.pages.len() >= PAGES_PER_ROOM {
            let (_, old) = room.pages.remove(0);
            shard.bytes -= old.len();
        }
        room.pages.push((after, body));
        shard.bytes += size;
        while shard.bytes > self.shard_budget {
            let Some(victim) = shard.rooms.keys().copied().find(|k| *k != key.0) else {
                break;
            };
            if let Some(gone) = shard.rooms.remove(&victim) {
                shard.bytes -= gone.bytes();
            }
        }
        let after_bytes = shard.bytes;
        if after_bytes >= before {
            self.bytes
                .fetch_add(after_bytes - before, Ordering::Relaxed);
        } else {
            self.bytes
                .fetch_sub(before - after_bytes, Ordering::Relaxed);
        }
    }

    /// Bytes of page bodies held.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(seq: u64) -> RoomVersion {
        RoomVersion::new(1, seq)
    }

    fn page(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[test]
    fn serves_a_page_only_at_the_current_version() {
        let c = PageCache::new(1 << 20);
        let k = RoomHash(42);
        c.put(k, 4, v(5), page(10));
        assert_eq!(c.get(k, 4, v(5)).map(|b| b.len()), Some(10));
        assert_eq!(c.get(k, 3, v(5)), None, "another after");
        assert_eq!(c.get(k, 4, v(6)), None, "the room moved on");
        assert_eq!(c.get(RoomHash(43), 4, v(5)), None, "another room");
        assert_eq!(c.bytes(), 10);
    }

    #[test]
    fn a_newer_version_replaces_the_room_and_an_older_one_is_dropped() {
        let c = PageCache::new(1 << 20);
        let k = RoomHash(7);
        c.put(k, 4, v(5), page(10));
        c.put(k, 3, v(5), page(20));
        c.put(k, 5, v(6), page(30));
        assert_eq!(c.get(k, 4, v(5)), None);
        assert_eq!(c.bytes(), 30);
        c.put(k, 4, v(5), page(10));
        assert_eq!(c.get(k, 4, v(5)), None, "older than the room's newest");
        assert_eq!(c.bytes(), 30);
        // A new epoch wins whatever its seq.
        c.put(k, 0, RoomVersion::new(2, 1), page(5));
        assert!(c.get(k, 0, RoomVersion::new(2, 1)).is_some());
        assert_eq!(c.bytes(), 5);
    }

    #[test]
    fn pages_per_room_and_page_size_are_bounded() {
        let c = PageCache::new(1 << 30);
        let k = RoomHash(9);
        for after in 0..10 {
            c.put(k, after, v(10), page(100));
        }
        assert_eq!(c.bytes(), 100 * PAGES_PER_ROOM);
        assert!(c.get(k, 9, v(10)).is_some(), "newest kept");
        assert!(c.get(k, 0, v(10)).is_none(), "oldest dropped");
        c.put(RoomHash(10), 0, v(1), page(MAX_PAGE_BYTES + 1));
        assert_eq!(c.get(RoomHash(10), 0, v(1)), None);
    }

    #[test]
    fn bytes_stay_within_the_budget() {
        let budget = SHARDS * 1000;
        let c = PageCache::new(budget);
        for room in 0..10_000u64 {
            // Spread over every shard (the shard comes from the high bits).
            let k = RoomHash(room.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            c.put(k, 0, v(1), page(300));
            assert!(c.bytes() <= budget, "{} > {budget}", c.bytes());
        }
        assert!(c.bytes() > budget / 2, "the budget is used: {}", c.bytes());
        let none = PageCache::new(0);
        none.put(RoomHash(1), 0, v(1), page(1));
        assert_eq!(none.get(RoomHash(1), 0, v(1)), None);
    }
}
