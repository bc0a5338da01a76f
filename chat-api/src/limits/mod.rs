//! Rate limits: sliding-window counters keyed by whatever the caller names
//! (`guest:{member}`, `ip:{addr}` …), by the sliding-window rule of
//! [`chatty_shared::WindowLimiter`]; and cooldowns (one hit per period,
//! exactly: slow mode), on the same keys and the same backends.
//!
//! Two implementations: [`InProcessLimiter`] (embedded mode, and the
//! fallback while Redis is down) and [`RedisLimiter`] (shared by every API
//! node).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chatty_shared::Rate;
use chatty_shared::WindowLimiter;
use parking_lot::Mutex;
use tokio::time::Instant;

#[cfg(test)]
mod conformance;
mod redis;

pub use chatty_shared::Decision;
pub use redis::RedisLimiter;

/// One limit a request must pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A hit on `key`'s sliding window, against `rate`.
    Hit { key: String, rate: Rate },
    /// One hit on `key` per `period` (slow mode).
    Cooldown { key: String, period: Duration },
}

/// A rate limiter.
#[async_trait]
pub trait Limiter: Send + Sync + 'static {
    /// Counts one hit on `key` against `rate`, unless it is refused.
    async fn hit(&self, key: &str, rate: Rate) -> Decision;

    /// One hit on `key` per `period`: an allowed hit starts the period, and
    /// every hit inside it is refused with the time left (refused hits do
    /// not extend it).
    async fn cooldown(&self, key: &str, period: Duration) -> Decision;

    /// Every check together (one round trip to a shared backend), answered
    /// in order. Each check counts as if asked alone, whatever the others
    /// answer.
    async fn check_all(&self, checks: &[Check]) -> Vec<Decision> {
        let mut decisions = Vec::with_capacity(checks.len());
        for check in checks {
            decisions.push(match check {
                Check::Hit { key, rate } => self.hit(key, *rate).await,
                Check::Cooldown { key, period } => self.cooldown(key, *period).await,
            });
        }
        decisions
    }
}

/// Default cap on the keys [`InProcessLimiter`] tracks.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// Rate limits inside one process, with at most `max_keys` keys tracked
/// by each of its window counters and cooldowns (see [`WindowLimiter`],
/// [`Cooldowns`]).
#[derive(Debug)]
pub struct InProcessLimiter {
    windows: WindowLimiter<String>,
    cooldowns: Cooldowns,
}

impl Default for InProcessLimiter {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_KEYS)
    }
}

impl InProcessLimiter {
    pub fn new(max_keys: usize) -> Self {
        Self {
            windows: WindowLimiter::new(max_keys),
            cooldowns: Cooldowns::new(max_keys),
        }
    }

    /// The synchronous core, shared with the Redis limiter's fallback.
    fn check(&self, key: &str, rate: Rate) -> Decision {
        self.windows.check(key, rate)
    }

    /// Likewise for cooldowns.
    fn check_cooldown(&self, key: &str, period: Duration) -> Decision {
        self.cooldowns.check(key, period)
    }
}

#[async_trait]
impl Limiter for InProcessLimiter {
    async fn hit(&self, key: &str, rate: Rate) -> Decision {
        self.check(key, rate)
    }

    async fn cooldown(&self, key: &str, period: Duration) -> Decision {
        self.check_cooldown(key, period)
    }
}

/// Cooldowns inside one process: for each key, the instant its period
/// ends. Bounded: when `max_keys` are tracked, the ended ones are pruned,
/// and if that is not enough every key is forgotten (which can only let a
/// hit through early, never refuse one late).
#[derive(Debug)]
pub struct Cooldowns {
    until: Mutex<HashMap<String, Instant>>,
    max_keys: usize,
}

impl Cooldowns {
    pub fn new(max_keys: usize) -> Self {
        Self {
            until: Mutex::new(HashMap::new()),
            max_keys: max_keys.max(1),
        }
    }

    /// Number of keys tracked.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.until.lock().len()
    }

    pub fn check(&self, key: &str, period: Duration) -> Decision {
        let now = Instant::now();
        let mut until = self.until.lock();
        if let Some(&end) = until.get(key) {
            if end > now {
                return Decision::Limited {
                    retry_after: end - now,
                };
            }
        } else if until.len() >= self.max_keys {
            until.retain(|_, end| *end > now);
            if until.len() >= self.max_keys {
                until.clear();
            }
        }
        until.insert(key.to_owned(), now + period);
        Decision::Allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_suite() {
        conformance::run_all(Arc::new(InProcessLimiter::default())).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_cooldown_ends_exactly_after_its_period() {
        let c = Cooldowns::new(10);
        let period = Duration::from_secs(5);
        assert_eq!(c.check("k", period), Decision::Allowed);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            c.check("k", period),
            Decision::Limited {
                retry_after: Duration::from_secs(3)
            }
        );
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(c.check("k", period), Decision::Allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn cooldowns_are_bounded() {
        let c = Cooldowns::new(3);
        for k in ["a", "b", "c"] {
            assert_eq!(c.check(k, Duration::from_secs(1)), Decision::Allowed);
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(c.check("d", Duration::from_secs(60)), Decision::Allowed);
        assert_eq!(c.len(), 1, "the ended ones pruned");
        for k in ["e", "f"] {
            assert_eq!(c.check(k, Duration::from_secs(60)), Decision::Allowed);
        }
        assert_eq!(c.check("g", Duration::from_secs(60)), Decision::Allowed);
        assert!(c.len() <= 3);
    }
}
