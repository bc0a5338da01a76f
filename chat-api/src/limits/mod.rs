//! Rate limits: sliding-window counters keyed by whatever the caller names
//! (`guest:{member}`, `ip:{addr}` …), by the sliding-window rule of
//! [`chatty_shared::WindowLimiter`].
//!
//! Two implementations: [`InProcessLimiter`] (embedded mode, and the
//! fallback while Redis is down) and [`RedisLimiter`] (shared by every API
//! node).

use async_trait::async_trait;
use chatty_shared::Rate;
use chatty_shared::WindowLimiter;

#[cfg(test)]
mod conformance;
mod redis;

pub use chatty_shared::Decision;
pub use redis::RedisLimiter;

/// A rate limiter.
#[async_trait]
pub trait Limiter: Send + Sync + 'static {
    /// Counts one hit on `key` against `rate`, unless it is refused.
    async fn hit(&self, key: &str, rate: Rate) -> Decision;
}

/// Default cap on the keys [`InProcessLimiter`] tracks.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// Rate limits inside one process, with at most `max_keys` keys tracked
/// (see [`WindowLimiter`]).
#[derive(Debug)]
pub struct InProcessLimiter(WindowLimiter<String>);

impl Default for InProcessLimiter {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_KEYS)
    }
}

impl InProcessLimiter {
    pub fn new(max_keys: usize) -> Self {
        Self(WindowLimiter::new(max_keys))
    }

    /// The synchronous core, shared with the Redis limiter's fallback.
    fn check(&self, key: &str, rate: Rate) -> Decision {
        self.0.check(key, rate)
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_suite() {
        conformance::run_all(Arc::new(InProcessLimiter::default())).await;
    }
}
