//! Short-lived caches that let a poll be answered `304` without a store
//! query: the current version of each room's log and members list, fed by
//! this node's own writes, by the bus and by store reads; and site records.
//!
//! Staleness bound (the rule of [`chatty_shared::Freshness`], which the
//! edge applies too): a cached version is trusted only while this node's bus
//! subscription is up, and for at most [`VERSION_MAX_AGE`] after it was
//! learned. With a healthy bus a version is stale for the bus latency
//! (milliseconds); when a publish is lost, for at most `VERSION_MAX_AGE`.
//! Losing the subscription empties the cache at once.
//!
//! A store read never overwrites a newer version learned while it was in
//! flight: each fill carries a ticket taken before the read, and loses to
//! any update or clear stamped after it.
//!
//! Site records, site rules and rooms' own slow mode are kept for at most
//! [`SITE_MAX_AGE`], and forgotten at once when the bus says the site
//! changed (`v1 s {site}`, published by the node that changed it); a lost
//! word leaves the old settings in force for at most that long. One store
//! read per key is in flight at a time: when an entry expires under load
//! (every guest of a live event leaving at once), the requests that miss
//! wait for the first one's read instead of each asking the store.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

use chatty_shared::RoomKey;
use chatty_shared::{BusTrust, Freshness, Version};

use crate::error::ApiError;

/// How long a learned version is trusted.
pub const VERSION_MAX_AGE: Duration = Duration::from_secs(1);
/// How long a site record (or its absence) is trusted.
pub const SITE_MAX_AGE: Duration = Duration::from_secs(3);
/// Most entries a cache holds before it is emptied.
pub const MAX_ENTRIES: usize = 100_000;

/// A ticket taken before a store read; see [`VersionCache::fill`].
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

struct Entry<V> {
    value: V,
    at: Instant,
    stamp: u64,
}

struct Inner<K, V> {
    map: HashMap<K, Entry<V>>,
    cleared_stamp: u64,
}

/// Current versions by key, bounded in age and entries.
pub struct VersionCache<K, V> {
    inner: Mutex<Inner<K, V>>,
    clock: AtomicU64,
    /// Whether entries may be used (the bus subscription is up).
    bus: BusTrust,
    rule: Freshness,
    start: Instant,
}

/// Whole milliseconds since `at` (exact against a max-age of whole
/// milliseconds).
fn age_ms(at: Instant) -> i64 {
    at.elapsed().as_millis().min(i64::MAX as u128) as i64
}

impl<K: Eq + Hash + Clone, V: Version> VersionCache<K, V> {
    pub fn new(max_age: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                cleared_stamp: 0,
            }),
            clock: AtomicU64::new(1),
            bus: BusTrust::default(),
            rule: Freshness::new(max_age),
            start: Instant::now(),
        }
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    /// The cached version if live and fresh.
    pub fn get(&self, key: &K) -> Option<V> {
        if !self.bus.is_up() {
            return None;
        }
        let inner = self.inner.lock();
        let e = inner.map.get(key)?;
        self.rule.is_fresh(age_ms(e.at)).then_some(e.value)
    }

    /// Taken before a store read whose result will be [`fill`](Self::fill)ed.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.tick())
    }

    fn insert(inner: &mut Inner<K, V>, key: K, value: V, stamp: u64) {
        if inner.map.len() >= MAX_ENTRIES && !inner.map.contains_key(&key) {
            inner.map.clear();
        }
        inner.map.insert(
            key,
            Entry {
                value,
                at: Instant::now(),
                stamp,
            },
        );
    }

    /// A version known to be current now (a commit of this node, or the
    /// bus). An older version never replaces a newer one of the same log
    /// while that one is fresh.
    pub fn update(&self, key: K, value: V) {
        let stamp = self.tick();
        let mut inner = self.inner.lock();
        let held = inner.map.get(&key).map(|e| (e.value, age_ms(e.at)));
        if self.rule.accepts(held, value) {
            Self::insert(&mut inner, key, value, stamp);
        }
    }

    /// A version read from the store after `ticket` was taken: kept unless
    /// something newer was learned (or the cache cleared) meanwhile.
    pub fn fill(&self, key: K, value: V, ticket: Ticket) {
        let stamp = self.tick();
        let mut inner = self.inner.lock();
        if inner.cleared_stamp > ticket.0 {
            return;
        }
        if let Some(e) = inner.map.get(&key) {
            if e.stamp > ticket.0 {
                return;
            }
        }
        Self::insert(&mut inner, key, value, stamp);
    }

    /// Forgets everything (bus lost or lagged).
    pub fn clear(&self) {
        let stamp = self.tick();
        let mut inner = self.inner.lock();
        inner.map.clear();
        inner.cleared_stamp = stamp;
    }

    /// Entries are used only while live (the bus subscription is up);
    /// losing it forgets everything.
    pub fn set_live(&self, live: bool) {
        if live {
            self.bus.heard(self.start.elapsed().as_millis() as u64);
        } else {
            self.bus.lost();
            self.clear();
        }
    }
}

/// Values by key for at most a max age, bounded in entries (past
/// [`MAX_ENTRIES`] it is emptied); for what changes rarely and is
/// forgotten by word of the bus. A store read started before a word was
/// heard never refills what the word made it forget: reads take a
/// [`Ticket`] first, and any forgetting voids every ticket taken before it.
/// [`get_or_load`](Self::get_or_load) reads each key once at a time.
pub struct TimedCache<K, V, E = ApiError> {
    map: Mutex<HashMap<K, (Instant, V)>>,
    max_age: Duration,
    /// Bumped by every forgetting.
    generation: AtomicU64,
    /// The keys being read, each with what its readers wait on: closed when
    /// the read ends, after its error if it failed. Only while a read is in
    /// flight.
    loading: Mutex<HashMap<K, watch::Receiver<Option<E>>>>,
}

/// The read of one key in flight: ends (wakes its waiters) when dropped.
struct Loading<'a, K: Eq + Hash, V, E> {
    cache: &'a TimedCache<K, V, E>,
    key: &'a K,
    done: watch::Sender<Option<E>>,
}

impl<K: Eq + Hash, V, E> Drop for Loading<'_, K, V, E> {
    fn drop(&mut self) {
        self.cache.loading.lock().remove(self.key);
    }
}

impl<K: Eq + Hash + Clone, V: Clone, E: Clone> TimedCache<K, V, E> {
    pub fn new(max_age: Duration) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            max_age,
            generation: AtomicU64::new(0),
            loading: Mutex::new(HashMap::new()),
        }
    }

    /// The value of `key`, fresh from the cache, else read by `load` and
    /// kept. While one request reads a key, others that miss it wait for
    /// that read and share its error if it fails: when the store is slow,
    /// they do not all ask it again. When a word of the bus voided the read,
    /// they read for themselves.
    pub async fn get_or_load<F>(&self, key: &K, load: impl FnOnce() -> F) -> Result<V, E>
    where
        F: Future<Output = Result<V, E>>,
    {
        if let Some(v) = self.get(key) {
            return Ok(v);
        }
        let seat = {
            let mut loading = self.loading.lock();
            match loading.get(key) {
                Some(done) => Err(done.clone()),
                None => {
                    let (tx, rx) = watch::channel(None);
                    loading.insert(key.clone(), rx);
                    Ok(Loading {
                        cache: self,
                        key,
                        done: tx,
                    })
                }
            }
        };
        let lead = match seat {
            Ok(lead) => Some(lead),
            Err(mut done) => {
                // Ends with an error once the reader's sender is gone, which
                // is the only way a read ends.
                let _ = done.changed().await;
                if let Some(v) = self.get(key) {
                    return Ok(v);
                }
                if let Some(e) = done.borrow().clone() {
                    return Err(e);
                }
                None
            }
        };
        let ticket = self.ticket();
        let read = load().await;
        match (&read, &lead) {
            (Ok(v), _) => self.fill(key.clone(), v.clone(), ticket),
            (Err(e), Some(lead)) => {
                lead.done.send_replace(Some(e.clone()));
            }
            (Err(_), None) => {}
        }
        read
    }

    /// The value, when cached and fresh.
    pub fn get(&self, key: &K) -> Option<V> {
        let map = self.map.lock();
        let (at, v) = map.get(key)?;
        (at.elapsed() < self.max_age).then(|| v.clone())
    }

    /// The value, fresh or not (to reuse what it was built from).
    pub fn get_stale(&self, key: &K) -> Option<V> {
        self.map.lock().get(key).map(|(_, v)| v.clone())
    }

    /// Taken before a store read whose result will be [`fill`](Self::fill)ed.
    fn ticket(&self) -> Ticket {
        Ticket(self.generation.load(Ordering::SeqCst))
    }

    /// A value read after `ticket` was taken: kept unless something was
    /// forgotten meanwhile.
    fn fill(&self, key: K, value: V, ticket: Ticket) {
        let mut map = self.map.lock();
        if self.generation.load(Ordering::SeqCst) != ticket.0 {
            return;
        }
        if map.len() >= MAX_ENTRIES && !map.contains_key(&key) {
            map.clear();
        }
        map.insert(key, (Instant::now(), value));
    }

    /// Forgets every entry whose key `forget` picks.
    pub fn forget_where(&self, forget: impl Fn(&K) -> bool) {
        let mut map = self.map.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        map.retain(|k, _| !forget(k));
    }
}

/// The two room version caches of a node.
pub struct RoomCaches {
    pub messages: VersionCache<RoomKey, chatty_shared::RoomVersion>,
    pub members: VersionCache<RoomKey, u64>,
}

impl Default for RoomCaches {
    fn default() -> Self {
        Self {
            messages: VersionCache::new(VERSION_MAX_AGE),
            members: VersionCache::new(VERSION_MAX_AGE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> VersionCache<&'static str, u64> {
        let c = VersionCache::new(Duration::from_millis(50));
        c.set_live(true);
        c
    }

    #[test]
    fn only_live_and_fresh() {
        let c = cache();
        c.update("a", 3);
        assert_eq!(c.get(&"a"), Some(3));
        c.set_live(false);
        assert_eq!(c.get(&"a"), None);
        c.set_live(true);
        assert_eq!(c.get(&"a"), None, "cleared when the bus went down");
        c.update("a", 4);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get(&"a"), None, "expired");
    }

    #[test]
    fn never_goes_backwards() {
        let c = cache();
        c.update("a", 5);
        c.update("a", 4);
        assert_eq!(c.get(&"a"), Some(5));
    }

    #[test]
    fn an_expired_version_takes_the_next_word() {
        let c = cache();
        c.update("a", 5);
        std::thread::sleep(Duration::from_millis(60));
        c.update("a", 4);
        assert_eq!(c.get(&"a"), Some(4), "as the edge does (shared rule)");
    }

    #[test]
    fn timed_entries_expire_and_are_forgotten_on_word() {
        let c: TimedCache<&str, u32> = TimedCache::new(Duration::from_millis(50));
        c.fill("a", 1, c.ticket());
        c.fill("b", 2, c.ticket());
        assert_eq!(c.get(&"a"), Some(1));
        c.forget_where(|k| *k == "a");
        assert_eq!((c.get(&"a"), c.get(&"b")), (None, Some(2)));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get(&"b"), None, "expired");
        assert_eq!(c.get_stale(&"b"), Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_that_miss_together_wait_for_one_read() {
        use std::sync::atomic::AtomicUsize;
        use std::sync::Arc;
        let c: Arc<TimedCache<&str, u32, &str>> =
            Arc::new(TimedCache::new(Duration::from_secs(10)));
        let reads = Arc::new(AtomicUsize::new(0));
        // Each read takes 100 ms; the first `fail` reads fail.
        let run = |fail: usize| {
            let tasks: Vec<_> = (0..20)
                .map(|_| {
                    let (c, reads) = (c.clone(), reads.clone());
                    tokio::spawn(async move {
                        c.get_or_load(&"site", || async {
                            let n = reads.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            if n < fail {
                                Err("store down")
                            } else {
                                Ok(7)
                            }
                        })
                        .await
                    })
                })
                .collect();
            async move {
                let mut out = Vec::new();
                for t in tasks {
                    out.push(t.await.unwrap());
                }
                out
            }
        };
        assert!(run(0).await.iter().all(|r| *r == Ok(7)));
        assert_eq!(
            reads.load(Ordering::SeqCst),
            1,
            "one read for twenty misses"
        );
        assert!(c.loading.lock().is_empty());
        // A failed read fails every request that waited for it, rather
        // than each asking a slow store again; the next miss reads again.
        c.forget_where(|_| true);
        reads.store(0, Ordering::SeqCst);
        let out = run(1).await;
        assert!(out.iter().all(|r| *r == Err("store down")), "{out:?}");
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        assert!(c.loading.lock().is_empty());
        assert!(run(1).await.iter().all(|r| *r == Ok(7)));
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_read_from_before_a_word_is_not_kept() {
        let c: TimedCache<&str, u32> = TimedCache::new(Duration::from_secs(10));
        let before = c.ticket();
        c.forget_where(|k| *k == "a");
        c.fill("a", 1, before);
        assert_eq!(c.get(&"a"), None);
        c.fill("a", 2, c.ticket());
        assert_eq!(c.get(&"a"), Some(2));
    }

    #[test]
    fn a_slow_read_loses_to_a_newer_update() {
        let c = cache();
        let t = c.ticket();
        c.update("a", 7);
        c.fill("a", 6, t);
        assert_eq!(c.get(&"a"), Some(7));
        let t = c.ticket();
        c.clear();
        c.fill("b", 1, t);
        assert_eq!(c.get(&"b"), None);
        let t = c.ticket();
        c.fill("b", 2, t);
        assert_eq!(c.get(&"b"), Some(2));
    }
}
