//! Room tails: the newest events of each streamed room, framed once as
//! Server-Sent Events, so that when a room moves every stream of it is
//! served from one shared fetch whatever its cursor. A plain type (no
//! pingora), bounded in bytes.
//!
//! # Why it is needed
//!
//! A page is keyed by the cursor it follows (`after`). In a busy room the
//! streams' cursors differ by a message or two (a write still going out, a
//! stream that woke late), so keyed by cursor, one move of the room meant
//! one fetch per distinct cursor, and a room of thousands of streams at ten
//! messages a second fetched hundreds of pages a second. A tail is keyed by
//! the room alone: a move is fetched once, from the tail's end, and every
//! stream whose cursor lies in the tail takes the slice after its cursor.
//!
//! # Why it is safe
//!
//! The log is append-only and its seqs consecutive (a deletion is an event
//! too), so the events after `start` up to version `V` are always the same
//! bytes. A tail is only extended by the page that begins exactly at its end
//! and reaches the version it names (a whole page, not one marked `more`),
//! and it is served only at the version the map vouches for, like a page.
//! A new epoch (the room's log started over) replaces it.
//!
//! # Bounds
//!
//! A tail keeps at most [`MAX_TAIL_EVENTS`] events and [`MAX_TAIL_BYTES`]
//! bytes, dropping its oldest chunks first (a stream further behind reads
//! pages as before); the tails of all rooms stay within the budget, split
//! over the shards, past which a shard drops whole rooms.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;

use bytes::{Bytes, BytesMut};
use chatty_shared::RoomVersion;
use parking_lot::Mutex;

use crate::versions::{IdentityHasher, RoomHash, SHARDS};

/// Most events a tail keeps.
pub const MAX_TAIL_EVENTS: usize = 512;
/// Most bytes a tail keeps.
pub const MAX_TAIL_BYTES: usize = 256 << 10;

/// Framed events of consecutive seqs.
#[derive(Debug, Clone, Default)]
pub struct Chunk {
    framed: BytesMut,
    /// `(seq, where its frame starts in framed)`, in seq order.
    seqs: Vec<(u64, usize)>,
}

impl Chunk {
    /// Adds the frame of the event `seq`, written by `frame`.
    pub fn push(&mut self, seq: u64, frame: impl FnOnce(&mut BytesMut)) {
        self.seqs.push((seq, self.framed.len()));
        frame(&mut self.framed);
    }

    /// The frames as one buffer, for a stream that has no tail to share.
    pub fn bytes(&self) -> &[u8] {
        &self.framed
    }

    fn freeze(self) -> Frozen {
        Frozen {
            framed: self.framed.freeze(),
            seqs: self.seqs,
        }
    }
}

#[derive(Debug)]
struct Frozen {
    framed: Bytes,
    seqs: Vec<(u64, usize)>,
}

impl Frozen {
    fn last(&self) -> Option<u64> {
        self.seqs.last().map(|(s, _)| *s)
    }

    /// The part of the chunk after `after`.
    fn split_after(self, after: u64) -> Frozen {
        let i = self.seqs.partition_point(|(s, _)| *s <= after);
        let Some(&(_, at)) = self.seqs.get(i) else {
            return Frozen {
                framed: Bytes::new(),
                seqs: Vec::new(),
            };
        };
        Frozen {
            framed: self.framed.slice(at..),
            seqs: self.seqs[i..].iter().map(|(s, o)| (*s, o - at)).collect(),
        }
    }

    /// The frames of the events after `after`.
    fn after(&self, after: u64) -> Bytes {
        let i = self.seqs.partition_point(|(s, _)| *s <= after);
        match self.seqs.get(i) {
            Some((_, at)) => self.framed.slice(*at..),
            None => Bytes::new(),
        }
    }
}

#[derive(Debug)]
struct Tail {
    /// The tail holds the events after `start` up to `version`.
    start: u64,
    version: RoomVersion,
    chunks: VecDeque<Frozen>,
    events: usize,
    bytes: usize,
}

impl Tail {
    fn trim(&mut self) {
        while (self.events > MAX_TAIL_EVENTS || self.bytes > MAX_TAIL_BYTES)
            && self.chunks.len() > 1
        {
            let Some(old) = self.chunks.pop_front() else {
                break;
            };
            self.start = old.last().unwrap_or(self.start);
            self.events -= old.seqs.len();
            self.bytes -= old.framed.len();
        }
    }
}

#[derive(Debug, Default)]
struct Shard {
    rooms: HashMap<u64, Tail, BuildHasherDefault<IdentityHasher>>,
    bytes: usize,
}

/// Where a stream stands against its room's tail.
#[derive(Debug, PartialEq)]
pub enum Reach {
    /// The frames after the cursor, up to the version given (the current
    /// one, or a newer one the tail already holds).
    Framed(Bytes, RoomVersion),
    /// The tail holds the cursor but ends at this older version: the page
    /// after it brings the tail (and every stream in it) forward.
    Behind(RoomVersion),
    /// No tail of this epoch holds the cursor.
    Outside,
}

/// The rooms' tails. See the module docs.
#[derive(Debug)]
pub struct Tails {
    shards: Box<[Mutex<Shard>]>,
    shard_budget: usize,
}

impl Tails {
    /// Tails of at most `max_bytes` in all.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            shard_budget: max_bytes / SHARDS,
        }
    }

    fn shard(&self, key: RoomHash) -> &Mutex<Shard> {
        // Apart from the version map's (low bits) and the page cache's
        // (top bits) choice of shard.
        &self.shards[(key.0 >> 48) as usize % SHARDS]
    }

    /// What the tail of `key` offers a stream at `after` while the room is
    /// at `current`.
    pub fn reach(&self, key: RoomHash, after: u64, current: RoomVersion) -> Reach {
        let shard = self.shard(key).lock();
        let Some(tail) = shard.rooms.get(&key.0) else {
            return Reach::Outside;
        };
        let same_log = tail.version.epoch == current.epoch;
        if !same_log || after < tail.start || after > tail.version.seq {
            return Reach::Outside;
        }
        if tail.version.seq < current.seq {
            return Reach::Behind(tail.version);
        }
        // A tail ahead of the map holds events a node answered: the map
        // hears of them soon, and the log never takes them back.
        let at = tail.version;
        let mut first = tail.chunks.iter().skip_while(|c| c.last() <= Some(after));
        let Some(head) = first.next() else {
            return Reach::Framed(Bytes::new(), at);
        };
        let head = head.after(after);
        let rest: Vec<&Frozen> = first.collect();
        if rest.is_empty() {
            return Reach::Framed(head, at);
        }
        let mut all = BytesMut::with_capacity(
            head.len() + rest.iter().map(|c| c.framed.len()).sum::<usize>(),
        );
        all.extend_from_slice(&head);
        for chunk in rest {
            all.extend_from_slice(&chunk.framed);
        }
        Reach::Framed(all.freeze(), at)
    }

    /// Keeps `chunk`, the whole events after `from` up to `to`: what it
    /// holds past the room's tail extends the tail when it starts within
    /// it (streams a message or two apart read overlapping pages); it
    /// starts the room's tail when the room has none, one of another epoch,
    /// one it would leave a gap after, or a shorter one at `to`.
    pub fn put(&self, key: RoomHash, from: u64, to: RoomVersion, chunk: Chunk) {
        let chunk = chunk.freeze();
        let size = chunk.framed.len();
        // Exactly the events from + 1 ..= to, or the tail would lie.
        let whole = to.seq >= from
            && chunk.seqs.len() as u64 == to.seq - from
            && (chunk.seqs.iter().zip(from + 1..)).all(|((s, _), want)| *s == want);
        if !whole || size > MAX_TAIL_BYTES {
            return;
        }
        let mut shard = self.shard(key).lock();
        let shard = &mut *shard;
        match shard.rooms.get_mut(&key.0) {
            Some(tail)
                if tail.version.epoch == to.epoch
                    && (tail.start..=tail.version.seq).contains(&from)
                    && to.seq > tail.version.seq =>
            {
                let added = chunk.split_after(tail.version.seq);
                let size = added.framed.len();
                tail.version = to;
                tail.events += added.seqs.len();
                tail.bytes += size;
                tail.chunks.push_back(added);
                let had = tail.bytes;
                tail.trim();
                shard.bytes = shard.bytes + size + tail.bytes - had;
            }
            Some(tail)
                if tail.version.epoch == to.epoch
                    && (tail.version.seq > to.seq
                        || (tail.version.seq == to.seq && tail.start <= from)) => {}
            _ => {
                let tail = Tail {
                    start: from,
                    version: to,
                    events: chunk.seqs.len(),
                    bytes: size,
                    chunks: VecDeque::from([chunk]),
                };
                let new = tail.bytes;
                if let Some(old) = shard.rooms.insert(key.0, tail) {
                    shard.bytes -= old.bytes;
                }
                shard.bytes += new;
            }
        }
        while shard.bytes > self.shard_budget {
            let Some(victim) = shard.rooms.keys().copied().find(|k| *k != key.0) else {
                break;
            };
            if let Some(gone) = shard.rooms.remove(&victim) {
                shard.bytes -= gone.bytes;
            }
        }
        if shard.bytes > self.shard_budget {
            if let Some(gone) = shard.rooms.remove(&key.0) {
                shard.bytes -= gone.bytes;
            }
        }
    }

    /// Bytes of frames held.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.shards.iter().map(|s| s.lock().bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(seq: u64) -> RoomVersion {
        RoomVersion::new(1, seq)
    }

    /// Events `from+1..=to`, each framed as "seq;".
    fn chunk(from: u64, to: u64) -> Chunk {
        let mut c = Chunk::default();
        for s in from + 1..=to {
            c.push(s, |out| out.extend_from_slice(format!("{s};").as_bytes()));
        }
        c
    }

    fn framed(t: &Tails, k: RoomHash, after: u64, at: u64) -> Option<String> {
        match t.reach(k, after, v(at)) {
            Reach::Framed(b, _) => Some(String::from_utf8(b.to_vec()).unwrap()),
            _ => None,
        }
    }

    #[test]
    fn every_cursor_in_the_tail_takes_its_slice() {
        let t = Tails::new(1 << 20);
        let k = RoomHash(5);
        t.put(k, 3, v(6), chunk(3, 6));
        assert_eq!(framed(&t, k, 3, 6).as_deref(), Some("4;5;6;"));
        assert_eq!(framed(&t, k, 5, 6).as_deref(), Some("6;"));
        assert_eq!(framed(&t, k, 6, 6).as_deref(), Some(""));
        assert_eq!(t.reach(k, 2, v(6)), Reach::Outside, "before the tail");
        assert_eq!(
            t.reach(RoomHash(6), 3, v(6)),
            Reach::Outside,
            "another room"
        );
        // The room moved: the tail is behind, for every cursor in it.
        assert_eq!(t.reach(k, 4, v(8)), Reach::Behind(v(6)));
        t.put(k, 6, v(8), chunk(6, 8));
        assert_eq!(framed(&t, k, 4, 8).as_deref(), Some("5;6;7;8;"));
        assert_eq!(framed(&t, k, 7, 8).as_deref(), Some("8;"));
        // A newer page that begins inside the tail extends it with what it
        // holds past the tail's end.
        t.put(k, 6, v(9), chunk(6, 9));
        assert_eq!(framed(&t, k, 4, 9).as_deref(), Some("5;6;7;8;9;"));
        // One that would leave a gap after the tail starts it over.
        t.put(k, 11, v(12), chunk(11, 12));
        assert_eq!(t.reach(k, 9, v(12)), Reach::Outside);
        assert_eq!(framed(&t, k, 11, 12).as_deref(), Some("12;"));
        t.put(k, 9, v(10), chunk(9, 10));
        assert_eq!(
            framed(&t, k, 11, 12).as_deref(),
            Some("12;"),
            "older: dropped"
        );
        // A new epoch replaces the tail.
        let e2 = RoomVersion::new(2, 1);
        assert_eq!(t.reach(k, 0, e2), Reach::Outside);
        t.put(k, 0, e2, chunk(0, 1));
        assert!(matches!(t.reach(k, 0, e2), Reach::Framed(..)));
        assert_eq!(t.reach(k, 7, v(8)), Reach::Outside);
        // A tail ahead of the map serves what it holds, up to its end.
        t.put(k, 1, RoomVersion::new(2, 3), chunk(1, 3));
        let ahead = t.reach(k, 1, RoomVersion::new(2, 2));
        assert_eq!(
            ahead,
            Reach::Framed(Bytes::from("2;3;"), RoomVersion::new(2, 3))
        );
    }

    #[test]
    fn a_longer_or_newer_page_starts_the_tail_an_older_one_does_not() {
        let t = Tails::new(1 << 20);
        let k = RoomHash(9);
        t.put(k, 5, v(7), chunk(5, 7));
        t.put(k, 6, v(7), chunk(6, 7));
        assert_eq!(
            framed(&t, k, 5, 7).as_deref(),
            Some("6;7;"),
            "shorter kept out"
        );
        t.put(k, 2, v(7), chunk(2, 7));
        assert_eq!(framed(&t, k, 2, 7).as_deref(), Some("3;4;5;6;7;"), "longer");
        t.put(k, 1, v(6), chunk(1, 6));
        assert_eq!(
            t.reach(k, 1, v(7)),
            Reach::Outside,
            "an older page is dropped"
        );
        t.put(k, 8, v(9), chunk(8, 9));
        assert_eq!(
            framed(&t, k, 8, 9).as_deref(),
            Some("9;"),
            "a newer one starts over"
        );
        // A chunk that does not hold every event up to its version is never
        // kept.
        t.put(k, 9, v(11), chunk(9, 10));
        assert_eq!(t.reach(k, 9, v(11)), Reach::Behind(v(9)));
        let mut gap = chunk(9, 10);
        gap.push(12, |out| out.extend_from_slice(b"12;"));
        t.put(k, 9, v(12), gap);
        assert_eq!(t.reach(k, 9, v(12)), Reach::Behind(v(9)));
    }

    #[test]
    fn a_tail_keeps_its_newest_events_and_the_tails_their_budget() {
        let t = Tails::new(1 << 30);
        let k = RoomHash(1);
        t.put(k, 0, v(1), chunk(0, 1));
        for s in 1..2 * MAX_TAIL_EVENTS as u64 {
            t.put(k, s, v(s + 1), chunk(s, s + 1));
        }
        let top = 2 * MAX_TAIL_EVENTS as u64;
        assert_eq!(t.reach(k, 3, v(top)), Reach::Outside, "old events dropped");
        let from = top - MAX_TAIL_EVENTS as u64;
        assert!(framed(&t, k, from, top).is_some(), "the newest kept");
        assert_eq!(t.bytes(), framed(&t, k, from, top).unwrap().len());

        let budget = SHARDS * 1000;
        let small = Tails::new(budget);
        for room in 0..5_000u64 {
            let k = RoomHash(room.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            small.put(k, 0, v(60), chunk(0, 60));
            assert!(small.bytes() <= budget, "{} > {budget}", small.bytes());
        }
        assert!(small.bytes() > budget / 2, "the budget is used");
    }
}
