//! Rate limits: sliding-window counters keyed by whatever the caller names
//! (`guest:{member}`, `ip:{addr}` …).
//!
//! The window is approximated the usual way: the count of the current fixed
//! window plus the previous window's count weighted by how much of it still
//! overlaps the sliding window. That needs two counters per key, never a log
//! of timestamps, and never lets more than `count` hits through in any
//! window of length `per` by more than the approximation's rounding. A
//! refused hit is not counted, so a flood does not extend its own wait.
//!
//! Two implementations: [`InProcessLimiter`] (embedded mode, and the
//! fallback while Redis is down) and [`RedisLimiter`] (shared by every API
//! node).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chatty_shared::config::Rate;
use parking_lot::Mutex;
use tokio::time::Instant;

pub mod conformance;
mod redis;

pub use redis::{LimiterError, RedisLimiter};

/// What a limiter says about one hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Refused; the same hit would be allowed after `retry_after`.
    Limited {
        retry_after: Duration,
    },
}

/// A rate limiter.
#[async_trait]
pub trait Limiter: Send + Sync + 'static {
    /// Counts one hit on `key` against `rate`, unless it is refused.
    async fn hit(&self, key: &str, rate: Rate) -> Decision;
}

/// The window length of `rate` in ms (at least 1).
fn per_ms(rate: Rate) -> u64 {
    u64::try_from(rate.per.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The sliding-window rule: with `prev` hits in the previous fixed window,
/// `curr` in the current one and `elapsed` ms into it, is one more hit
/// allowed? If not, how many ms until it would be.
fn decide(prev: u64, curr: u64, elapsed: u64, per: u64, limit: u64) -> Result<(), u64> {
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

/// Default cap on the keys [`InProcessLimiter`] tracks.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Counter {
    /// Index of the current fixed window (ms since the limiter's start / per).
    window: u64,
    per: u64,
    curr: u64,
    prev: u64,
}

#[derive(Debug)]
struct LimiterState {
    counters: HashMap<String, Counter>,
}

/// Rate limits inside one process. Memory is bounded: counters whose
/// windows have passed are pruned, and at most `max_keys` keys are tracked
/// (past that, after pruning, a tenth of the keys are forgotten, which can
/// only let their next hits through early).
#[derive(Debug)]
pub struct InProcessLimiter {
    state: Mutex<LimiterState>,
    start: Instant,
    max_keys: usize,
}

impl Default for InProcessLimiter {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_KEYS)
    }
}

impl InProcessLimiter {
    pub fn new(max_keys: usize) -> Self {
        Self {
            state: Mutex::new(LimiterState {
                counters: HashMap::new(),
            }),
            start: Instant::now(),
            max_keys: max_keys.max(1),
        }
    }

    /// Number of keys tracked (for tests and metrics).
    pub fn len(&self) -> usize {
        self.state.lock().counters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The synchronous core, shared with the Redis limiter's fallback.
    pub(crate) fn check(&self, key: &str, rate: Rate) -> Decision {
        let limit = u64::from(rate.count);
        let per = per_ms(rate);
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let window = now / per;
        let elapsed = now % per;
        let mut state = self.state.lock();
        if !state.counters.contains_key(key) && state.counters.len() >= self.max_keys {
            self.prune(&mut state, now);
        }
        let c = state.counters.entry(key.to_owned()).or_insert(Counter {
            window,
            per,
            curr: 0,
            prev: 0,
        });
        if c.per != per {
            // Same key, another rate: start over rather than mix windows.
            *c = Counter {
                window,
                per,
                curr: 0,
                prev: 0,
            };
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

    fn prune(&self, state: &mut LimiterState, now: u64) {
        // A counter two windows old counts for nothing any more.
        state
            .counters
            .retain(|_, c| now / c.per <= c.window.saturating_add(1));
        if state.counters.len() >= self.max_keys {
            let drop = (self.max_keys / 10).max(1);
            let victims: Vec<String> = state.counters.keys().take(drop).cloned().collect();
            for k in victims {
                state.counters.remove(&k);
            }
        }
    }
}

#[async_trait]
impl Limiter for InProcessLimiter {
    async fn hit(&self, key: &str, rate: Rate) -> Decision {
        self.check(key, rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

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
        let l = InProcessLimiter::default();
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
        let l = InProcessLimiter::new(100);
        let r = rate(1, 1000);
        for i in 0..1000 {
            assert_eq!(l.check(&format!("k{i}"), r), Decision::Allowed);
        }
        assert!(l.len() <= 100);
        tokio::time::advance(Duration::from_secs(3)).await;
        l.check("fresh", r);
        for i in 0..99 {
            l.check(&format!("n{i}"), r);
        }
        l.check("last", r);
        assert!(l.len() <= 100, "stale keys were pruned first");
        assert!(matches!(
            l.check("fresh", r),
            Decision::Limited { .. } | Decision::Allowed
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_suite() {
        conformance::run_all(Arc::new(InProcessLimiter::default())).await;
    }
}
