//! Sliding-window rate limiting, the rule both sides apply: the API nodes
//! per guest and per address, the edge per address.
//!
//! The window is approximated the usual way: the count of the current fixed
//! window plus the previous window's count weighted by how much of it still
//! overlaps the sliding window. That needs two counters per key, never a log
//! of timestamps, and never lets more than `count` hits through in any
//! window of length `per` by more than the approximation's rounding. A
//! refused hit is not counted, so a flood does not extend its own wait.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::config::Rate;

/// What a limiter says about one hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Refused; the same hit would be allowed after `retry_after`.
    Limited {
        retry_after: Duration,
    },
}

/// A wait as a `Retry-After` value: whole seconds, rounded up, at least 1.
pub fn retry_after_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

/// The window length of `rate` in ms (at least 1).
pub fn per_ms(rate: Rate) -> u64 {
    u64::try_from(rate.per.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The sliding-window rule: with `prev` hits in the previous fixed window,
/// `curr` in the current one and `elapsed` ms into it, is one more hit
/// allowed? If not, how many ms until it would be.
pub fn decide(prev: u64, curr: u64, elapsed: u64, per: u64, limit: u64) -> Result<(), u64> {
    let (prev, curr, elapsed, per, limit) = (
        u128::from(prev),
        u128::from(curr),
        u128::from(elapsed.min(per)),
        u128::from(per),
        u128::from(limit),
    );
    if prev * (per - elapsed) + (curr + 1) * per <= limit * per {
        return Ok(());
    }
    let wait = if curr < limit {
        // Enough room in this window once the previous one weighs less.
        // prev > 0 here, or the hit would have been allowed.
        let at = per - ((limit - curr - 1) * per) / prev.max(1);
        at.saturating_sub(elapsed)
    } else {
        // Wait for the next window, then for this one's weight to shrink.
        let next = per - elapsed;
        let at = per - ((limit - 1) * per) / curr.max(1);
        next + at
    };
    Err(u64::try_from(wait.max(1)).unwrap_or(u64::MAX))
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    /// Index of the current fixed window (ms since the limiter's start / per).
    window: u64,
    per: u64,
    curr: u64,
    prev: u64,
}

/// Sliding-window counters inside one process, keyed by `K`. Memory is
/// bounded: counters whose windows have passed are pruned, and at most
/// `max_keys` keys are tracked (past that, after pruning, a tenth of the
/// keys are forgotten, which can only let their next hits through early).
#[derive(Debug)]
pub struct WindowLimiter<K> {
    counters: Mutex<HashMap<K, Counter>>,
    start: Instant,
    max_keys: usize,
}

impl<K: Hash + Eq + Clone> WindowLimiter<K> {
    pub fn new(max_keys: usize) -> Self {
        Self {
            counters: Mutex::new(HashMap::new()),
            start: Instant::now(),
            max_keys: max_keys.max(1),
        }
    }

    /// Number of keys tracked.
    pub fn len(&self) -> usize {
        self.counters.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts one hit on `key` against `rate`, unless it is refused.
    pub fn check<Q>(&self, key: &Q, rate: Rate) -> Decision
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let limit = u64::from(rate.count);
        let per = per_ms(rate);
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let window = now / per;
        let elapsed = now % per;
        let mut counters = self.counters.lock();
        if !counters.contains_key(key) && counters.len() >= self.max_keys {
            self.prune(&mut counters, now);
        }
        let fresh = Counter {
            window,
            per,
            curr: 0,
            prev: 0,
        };
        let c = match counters.get_mut(key) {
            Some(c) => c,
            None => counters.entry(key.to_owned()).or_insert(fresh),
        };
        if c.per != per {
            // Same key, another rate: start over rather than mix windows.
            *c = fresh;
        }
        if c.window != window {
            c.prev = if c.window + 1 == window { c.curr } else { 0 };
            c.curr = 0;
            c.window = window;
        }
        match decide(c.prev, c.curr, elapsed, per, limit) {
            Ok(()) => {
                c.curr += 1;
                Decision::Allowed
            }
            Err(ms) => Decision::Limited {
                retry_after: Duration::from_millis(ms),
            },
        }
    }

    fn prune(&self, counters: &mut HashMap<K, Counter>, now: u64) {
        // A counter two windows old counts for nothing any more.
        counters.retain(|_, c| now / c.per <= c.window.saturating_add(1));
        if counters.len() >= self.max_keys {
            let drop = (self.max_keys / 10).max(1);
            let victims: Vec<K> = counters.keys().take(drop).cloned().collect();
            for k in victims {
                counters.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(count: u32, ms: u64) -> Rate {
        Rate {
            count,
            per: Duration::from_millis(ms),
        }
    }

    #[test]
    fn the_sliding_window_rule() {
        // Empty: allowed.
        assert_eq!(decide(0, 0, 0, 1000, 3), Ok(()));
        assert_eq!(decide(0, 2, 500, 1000, 3), Ok(()));
        // Full current window: wait for the next one, then for the previous
        // window (now 3 hits) to weigh at most 2: 1/3 of it.
        assert_eq!(decide(0, 3, 400, 1000, 3), Err(600 + 334));
        // Full previous window, half over: 1.5 + 1 + 1 > 3 at curr = 1.
        assert_eq!(decide(3, 1, 500, 1000, 3), Err(167));
        // Limit one: a hit in this window blocks until the next one ends.
        assert_eq!(decide(0, 1, 0, 1000, 1), Err(2000));
        assert!(decide(1, 0, 999, 1000, 1).is_err());
        assert_eq!(decide(1, 0, 1000, 1000, 1), Ok(()));
        // Huge numbers neither overflow nor panic.
        assert!(decide(u64::MAX, u64::MAX, u64::MAX, u64::MAX, u64::from(u32::MAX)).is_err());
    }

    #[test]
    fn waiting_as_told_is_enough() {
        for (prev, curr, elapsed) in [(3, 1, 500), (0, 3, 400), (5, 0, 10), (2, 2, 900)] {
            let Err(wait) = decide(prev, curr, elapsed, 1000, 3) else {
                continue;
            };
            let t = elapsed + wait;
            let ok = if t < 1000 {
                decide(prev, curr, t, 1000, 3)
            } else if t < 2000 {
                decide(curr, 0, t - 1000, 1000, 3)
            } else {
                decide(0, 0, t - 2000, 1000, 3)
            };
            assert_eq!(
                ok,
                Ok(()),
                "prev {prev} curr {curr} elapsed {elapsed} wait {wait}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn limits_with_paused_time() {
        let l = WindowLimiter::<String>::new(100);
        let r = rate(2, 1000);
        assert_eq!(l.check("k", r), Decision::Allowed);
        assert_eq!(l.check("k", r), Decision::Allowed);
        let Decision::Limited { retry_after } = l.check("k", r) else {
            panic!("third hit allowed")
        };
        assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(2));
        tokio::time::advance(retry_after).await;
        assert_eq!(l.check("k", r), Decision::Allowed);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(l.check("k", r), Decision::Allowed);
        assert_eq!(l.check("k", r), Decision::Allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded() {
        let l = WindowLimiter::<String>::new(100);
        let r = rate(1, 1000);
        for i in 0..1000 {
            assert_eq!(l.check(format!("k{i}").as_str(), r), Decision::Allowed);
        }
        assert!(l.len() <= 100);
        tokio::time::advance(Duration::from_secs(3)).await;
        l.check("fresh", r);
        for i in 0..99 {
            l.check(format!("n{i}").as_str(), r);
        }
        l.check("last", r);
        assert!(l.len() <= 100, "stale keys were pruned first");
        assert_eq!(
            l.check("last", r),
            Decision::Limited {
                retry_after: Duration::from_millis(2000)
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn keys_that_are_not_strings() {
        let l = WindowLimiter::<std::net::IpAddr>::new(10);
        let a: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        let b: std::net::IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(l.check(&a, rate(1, 1000)), Decision::Allowed);
        assert!(matches!(
            l.check(&a, rate(1, 1000)),
            Decision::Limited { .. }
        ));
        assert_eq!(l.check(&b, rate(1, 1000)), Decision::Allowed);
    }
}
