//! Held polls and open streams: the registry of requests parked at the edge
//! (a poll that prefers to wait, an event stream between two events) until
//! their room moves, their wait ends or the edge stops. A plain type (no
//! pingora), bounded by `--max-held` for both kinds together.
//!
//! # Shape
//!
//! - **Key**: the room's keyed hash with the part (messages or members)
//!   folded in, so a message does not wake the members polls of its room.
//! - **Value**: a bell ([`Notify`] and when it last rang) shared by every
//!   request parked on that key, and how many they are; the entry goes with
//!   the last of them. A held poll waits on one key; a stream on both parts
//!   of its room.
//! - **Waking**: the version map tells the registry when a part of a room
//!   moves (a bus bump, an answer that taught a newer version) or when it
//!   forgets everything ([`Moves`]); every poll parked there wakes and looks
//!   at the map again. A wake that finds nothing new only parks it again.
//! - **No lost wake**: a poll enables its wake-up before it looks at the
//!   map, so a move between the look and the wait still wakes it.
//! - **Bound**: at most `max` parked requests in all; past it
//!   [`Holds::park`] says no and the poll is answered at once, as without
//!   the preference (a stream is answered as a poll).
//! - **Stopping**: [`Holds::close`] releases every parked poll at once and
//!   parks no more.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chatty_shared::Resource;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::metrics::metrics;
use crate::versions::{IdentityHasher, Moves, RoomHash, SHARDS};

/// Longest wait a poll is held, whatever it prefers.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// Folded into the key of a room's members polls.
const MEMBERS_SALT: u64 = 0x6d65_6d62_6572_7321;

fn hold_key(key: RoomHash, part: Resource) -> u64 {
    match part {
        Resource::Messages => key.0,
        Resource::Members => key.0 ^ MEMBERS_SALT,
    }
}

/// The wait a request prefers (RFC 7240 `Prefer: wait=S`, in any of its
/// `Prefer` lines), capped at [`MAX_WAIT`]; `None` without one, or for a
/// wait of 0.
pub fn preferred_wait<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<Duration> {
    let secs = values.into_iter().find_map(wait_of)?;
    (secs > 0).then(|| Duration::from_secs(secs).min(MAX_WAIT))
}

/// `wait=S` of one `Prefer` value: comma-separated preferences, each
/// maybe with `;` parameters, the value maybe quoted.
fn wait_of(value: &[u8]) -> Option<u64> {
    value.split(|b| *b == b',').find_map(|pref| {
        let pref = pref.split(|b| *b == b';').next()?.trim_ascii();
        let eq = pref.iter().position(|b| *b == b'=')?;
        let (name, v) = (pref[..eq].trim_ascii(), pref[eq + 1..].trim_ascii());
        if !name.eq_ignore_ascii_case(b"wait") {
            return None;
        }
        let v = v
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(v);
        let digits = std::str::from_utf8(v).ok()?;
        // More digits than any wait needs is still a long wait.
        match chatty_shared::parse_decimal(digits) {
            Some(n) => Some(n),
            None if !v.is_empty() && v.iter().all(u8::is_ascii_digit) => Some(u64::MAX),
            None => None,
        }
    })
}

/// What wakes the requests parked on one key, and when it last did: the
/// moment the edge heard of the move, for the push latency.
#[derive(Debug, Default)]
struct Bell {
    notify: Notify,
    rung: Mutex<Option<Instant>>,
}

impl Bell {
    fn ring(&self) {
        *self.rung.lock() = Some(Instant::now());
        self.notify.notify_waiters();
    }
}

/// The requests parked on one key.
#[derive(Debug, Default)]
struct Waiting {
    bell: Arc<Bell>,
    parked: usize,
}

/// What is parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A poll that prefers to wait, on one part of its room.
    Poll,
    /// An event stream, on both parts of its room.
    Stream,
}

type WaitMap = HashMap<u64, Waiting, BuildHasherDefault<IdentityHasher>>;

/// The registry of parked polls. See the module docs.
#[derive(Debug)]
pub struct Holds {
    shards: Box<[Mutex<WaitMap>]>,
    max: usize,
    held: AtomicUsize,
    closing: AtomicBool,
}

/// Why a parked poll stopped waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// Its part of the room moved, or the map must be asked again.
    Moved,
    /// The time given to [`Parked::wait`] came.
    Timer,
    /// The edge is stopping.
    Closing,
}

/// One parked request's place; gives it back when dropped.
#[derive(Debug)]
pub struct Parked {
    holds: Arc<Holds>,
    kind: Kind,
    /// The keys it waits on (one or two) and their bells.
    places: Vec<(u64, Arc<Bell>)>,
}

impl Holds {
    /// A registry of at most `max` parked polls (0: none).
    pub fn new(max: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            max,
            held: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
        }
    }

    fn shard(&self, key: u64) -> &Mutex<WaitMap> {
        &self.shards[(key >> 32) as usize % SHARDS]
    }

    /// Parks a poll of `part` of a room; `None` when the registry is full or
    /// the edge is stopping.
    pub fn park(self: &Arc<Self>, key: RoomHash, part: Resource) -> Option<Parked> {
        self.take(Kind::Poll, &[hold_key(key, part)])
    }

    /// Parks a stream of a room (both parts); `None` as for [`Holds::park`].
    pub fn park_stream(self: &Arc<Self>, key: RoomHash) -> Option<Parked> {
        let keys = [Resource::Messages, Resource::Members].map(|part| hold_key(key, part));
        self.take(Kind::Stream, &keys)
    }

    fn take(self: &Arc<Self>, kind: Kind, keys: &[u64]) -> Option<Parked> {
        if self.closing.load(Ordering::Acquire) {
            return None;
        }
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        gauge(kind).inc();
        let places = keys
            .iter()
            .map(|&key| {
                let mut shard = self.shard(key).lock();
                let waiting = shard.entry(key).or_default();
                waiting.parked += 1;
                (key, waiting.bell.clone())
            })
            .collect();
        Some(Parked {
            holds: self.clone(),
            kind,
            places,
        })
    }

    /// Wakes the polls parked on `part` of a room.
    pub fn wake(&self, key: RoomHash, part: Resource) {
        let key = hold_key(key, part);
        if let Some(waiting) = self.shard(key).lock().get(&key) {
            waiting.bell.ring();
        }
    }

    /// Wakes every parked poll.
    pub fn wake_all(&self) {
        for shard in self.shards.iter() {
            for waiting in shard.lock().values() {
                waiting.bell.ring();
            }
        }
    }

    /// Releases every parked poll and parks no more (the edge is stopping).
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.wake_all();
    }

    /// Requests parked now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

impl Moves for Holds {
    fn moved(&self, key: RoomHash, part: Resource) {
        self.wake(key, part);
    }

    fn forgot(&self) {
        self.wake_all();
    }
}

/// The gauge of parked requests of `kind`.
fn gauge(kind: Kind) -> &'static prometheus::IntGauge {
    match kind {
        Kind::Poll => &metrics().held_polls,
        Kind::Stream => &metrics().open_streams,
    }
}

impl Parked {
    /// Waits until a part moves, `until` comes or the edge stops.
    /// `unchanged` looks at the map once the wake-up is armed: false means
    /// the part moved already.
    pub async fn wait(&self, until: Instant, unchanged: impl FnOnce() -> bool) -> Woken {
        self.wait_on(true, until, unchanged).await
    }

    /// As [`Parked::wait`], deaf to the members of a stream's room: for a
    /// stream that may not send them again before `until` (a join ramp
    /// moves them hundreds of times a second, and each wake of thousands
    /// of streams would bring them nothing).
    pub async fn wait_for_messages(
        &self,
        until: Instant,
        unchanged: impl FnOnce() -> bool,
    ) -> Woken {
        self.wait_on(false, until, unchanged).await
    }

    async fn wait_on(
        &self,
        members: bool,
        until: Instant,
        unchanged: impl FnOnce() -> bool,
    ) -> Woken {
        let first = self.places[0].1.notify.notified();
        let second = self
            .places
            .get(1)
            .filter(|_| members)
            .map(|(_, bell)| bell.notify.notified());
        tokio::pin!(first);
        let mut second = std::pin::pin!(second);
        first.as_mut().enable();
        if let Some(n) = second.as_mut().as_pin_mut() {
            n.enable();
        }
        if self.holds.closing.load(Ordering::Acquire) {
            return Woken::Closing;
        }
        if !unchanged() {
            return Woken::Moved;
        }
        let either = async {
            match second.as_mut().as_pin_mut() {
                Some(second) => {
                    tokio::select! {
                        _ = first => {}
                        _ = second => {}
                    }
                }
                None => first.await,
            }
        };
        tokio::select! {
            _ = either => {
                if self.holds.closing.load(Ordering::Acquire) {
                    Woken::Closing
                } else {
                    Woken::Moved
                }
            }
            _ = tokio::time::sleep_until(until) => Woken::Timer,
        }
    }

    /// When the edge last heard of a move of what this request waits on.
    pub fn last_move(&self) -> Option<Instant> {
        self.places.iter().filter_map(|(_, b)| *b.rung.lock()).max()
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        for (key, _) in &self.places {
            let mut shard = self.holds.shard(*key).lock();
            if let Some(waiting) = shard.get_mut(key) {
                waiting.parked -= 1;
                if waiting.parked == 0 {
                    shard.remove(key);
                }
            }
        }
        self.holds.held.fetch_sub(1, Ordering::AcqRel);
        gauge(self.kind).dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOBBY: RoomHash = RoomHash(0x1234_5678_9abc_def0);
    const HALL: RoomHash = RoomHash(0x0fed_cba9_8765_4321);

    fn later(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[test]
    fn the_preferred_wait() {
        let s = |secs| Some(Duration::from_secs(secs));
        for (values, want) in [
            (vec!["wait=10"], s(10)),
            (vec!["WAIT = 5"], s(5)),
            (vec!["respond-async, wait=7"], s(7)),
            (vec!["return=minimal", "wait=\"3\""], s(3)),
            (vec!["wait=2;x=y"], s(2)),
            (vec!["wait=600"], s(30)),
            (vec!["wait=99999999999999999999999"], s(30)),
            (vec!["wait=1", "wait=9"], s(1)),
            (vec!["wait=0"], None),
            (vec!["wait="], None),
            (vec!["wait=-1"], None),
            (vec!["wait=1s"], None),
            (vec!["waiting=3"], None),
            (vec!["return=minimal"], None),
            (vec![], None),
        ] {
            let got = preferred_wait(values.iter().map(|v| v.as_bytes()));
            assert_eq!(got, want, "{values:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_parked_poll_waits_for_its_time() {
        let holds = Arc::new(Holds::new(10));
        let p = holds.park(LOBBY, Resource::Messages).unwrap();
        let start = Instant::now();
        assert_eq!(p.wait(later(1000), || true).await, Woken::Timer);
        assert_eq!(start.elapsed(), Duration::from_millis(1000));
        assert_eq!(holds.len(), 1);
        drop(p);
        assert_eq!(holds.len(), 0);
        assert!(holds.shards.iter().all(|s| s.lock().is_empty()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_move_wakes_the_polls_of_its_part_only() {
        let holds = Arc::new(Holds::new(10));
        let mut tasks = Vec::new();
        for (key, part) in [
            (LOBBY, Resource::Messages),
            (LOBBY, Resource::Messages),
            (LOBBY, Resource::Members),
            (HALL, Resource::Messages),
        ] {
            let p = holds.park(key, part).unwrap();
            tasks.push(tokio::spawn(async move {
                let start = Instant::now();
                (p.wait(later(30_000), || true).await, start.elapsed())
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        holds.wake(LOBBY, Resource::Messages);
        let mut woken = Vec::new();
        for t in tasks {
            woken.push(t.await.unwrap());
        }
        let ms = |w: &(Woken, Duration)| (w.0, w.1.as_millis());
        assert_eq!(
            woken.iter().map(ms).collect::<Vec<_>>(),
            [
                (Woken::Moved, 100),
                (Woken::Moved, 100),
                (Woken::Timer, 30_000),
                (Woken::Timer, 30_000),
            ]
        );
        assert_eq!(holds.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_move_before_the_wait_is_not_lost() {
        let holds = Arc::new(Holds::new(10));
        let p = holds.park(LOBBY, Resource::Members).unwrap();
        // The map moved between parking and waiting: the look says so.
        assert_eq!(p.wait(later(5000), || false).await, Woken::Moved);
        // A wake while the poll looks at the map wakes it.
        let start = Instant::now();
        let woken = p
            .wait(later(5000), || {
                holds.wake(LOBBY, Resource::Members);
                true
            })
            .await;
        assert_eq!((woken, start.elapsed()), (Woken::Moved, Duration::ZERO));
        // Forgetting the map wakes everyone.
        let woken = p.wait(later(5000), || {
            holds.forgot();
            true
        });
        assert_eq!(woken.await, Woken::Moved);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_wakes_for_either_part_and_counts_once() {
        let holds = Arc::new(Holds::new(2));
        let s = holds.park_stream(LOBBY).unwrap();
        assert_eq!(holds.len(), 1);
        assert_eq!(s.last_move(), None);
        for part in [Resource::Messages, Resource::Members] {
            let start = Instant::now();
            let woken = s.wait(later(5000), || {
                holds.wake(LOBBY, part);
                true
            });
            assert_eq!(
                (woken.await, start.elapsed()),
                (Woken::Moved, Duration::ZERO)
            );
        }
        assert!(s.last_move().is_some());
        assert_eq!(s.wait(later(100), || true).await, Woken::Timer);
        // Deaf to the members, not to the messages.
        let members_only = s.wait_for_messages(later(100), || {
            holds.wake(LOBBY, Resource::Members);
            true
        });
        assert_eq!(members_only.await, Woken::Timer);
        let messages = s.wait_for_messages(later(100), || {
            holds.wake(LOBBY, Resource::Messages);
            true
        });
        assert_eq!(messages.await, Woken::Moved);
        drop(s);
        assert_eq!(holds.len(), 0);
        assert!(holds.shards.iter().all(|s| s.lock().is_empty()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_cap_and_closing() {
        let holds = Arc::new(Holds::new(2));
        let a = holds.park(LOBBY, Resource::Messages).unwrap();
        let b = holds.park(HALL, Resource::Messages).unwrap();
        assert!(holds.park(LOBBY, Resource::Members).is_none(), "full");
        drop(b);
        let b = holds.park(LOBBY, Resource::Members).unwrap();
        let waiting = tokio::spawn(async move { a.wait(later(30_000), || true).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        holds.close();
        assert_eq!(waiting.await.unwrap(), Woken::Closing);
        assert_eq!(b.wait(later(30_000), || true).await, Woken::Closing);
        drop(b);
        assert!(holds.park(HALL, Resource::Messages).is_none(), "closed");
        assert_eq!(holds.len(), 0);
        assert!(Arc::new(Holds::new(0))
            .park(LOBBY, Resource::Messages)
            .is_none());
    }
}
