//! Rate limits in Redis, shared by every API node, with a per-node fallback.
//!
//! Counters live at `{prefix}l:{key}:{window}` (two per key at a time, each
//! expiring after two windows); one Lua script, timed by Redis' clock,
//! applies the sliding-window rule and counts the hit atomically. A
//! cooldown is one key, `{prefix}c:{key}`, set with `NX` and expiring at
//! the end of its period.
//!
//! On a Redis Cluster the script's two window keys must share a slot, so
//! there the key is a hash tag: `{prefix}l:{{key}}:{window}`. Each limited
//! key (a guest, an address) lives on one shard, and the keys spread over
//! all of them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatty_shared::per_ms;
use chatty_shared::Rate;

use super::{Check, Decision, InProcessLimiter, Limiter};
use crate::redis::{BoundedClient, Call, CallError, Script};

/// Upper bound on one Redis round trip before falling back.
const CALL_TIMEOUT: Duration = Duration::from_millis(300);

/// KEYS: counter key stem. ARGV: limit, window ms.
/// Returns 0 when allowed (and counted), else the ms to wait.
static HIT: Script = Script::new(
    "local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local per = tonumber(ARGV[2])
local w = math.floor(now / per)
local elapsed = now - w * per
local ck = KEYS[1] .. string.format('%d', w)
local curr = tonumber(redis.call('GET', ck) or '0')
local prev = tonumber(redis.call('GET', KEYS[1] .. string.format('%d', w - 1)) or '0')
if prev * (per - elapsed) + (curr + 1) * per <= limit * per then
  redis.call('INCR', ck)
  redis.call('PEXPIRE', ck, 2 * per + 1000)
  return 0
end
local wait
if curr < limit then
  wait = per - math.floor(((limit - curr - 1) * per) / math.max(prev, 1)) - elapsed
else
  wait = (per - elapsed) + per - math.floor(((limit - 1) * per) / math.max(curr, 1))
end
return math.max(wait, 1)
",
);

/// KEYS: cooldown key. ARGV: period ms.
/// Returns 0 when allowed (the period starts now), else the ms left.
static COOLDOWN: Script = Script::new(
    "if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  return 0
end
local left = redis.call('PTTL', KEYS[1])
if left < 1 then
  return 1
end
return left
",
);

/// Rate limits kept in Redis, so that every node counts the same hits.
///
/// **While Redis is down or slow, each node falls back to its own
/// [`InProcessLimiter`]**: limits keep working, per node (so a client
/// spread over `n` nodes may get up to `n` times the rate), and sends are
/// never refused because Redis is unavailable. Back on Redis, the shared
/// counters resume where they were.
pub struct RedisLimiter {
    redis: BoundedClient,
    prefix: String,
    fallback: InProcessLimiter,
}

/// The start of a limited key's counter names; the window follows. On a
/// Cluster the key is the hash tag, so that both windows the script reads
/// share a slot.
fn counter_stem(prefix: &str, key: &str, clustered: bool) -> String {
    if clustered {
        format!("{prefix}l:{{{key}}}:")
    } else {
        format!("{prefix}l:{key}:")
    }
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Why the Redis limiter could not be built (a bad URL).
#[derive(Debug, thiserror::Error)]
#[error("rate limits: {0}")]
pub struct LimiterError(String);

impl RedisLimiter {
    /// Starts connecting in the background (the fallback answers until
    /// Redis does). Keys live under `prefix`. Needs a tokio runtime.
    pub fn connect(url: &str, prefix: &str) -> Result<Arc<RedisLimiter>, LimiterError> {
        Ok(Arc::new(RedisLimiter {
            redis: BoundedClient::connect(url, CALL_TIMEOUT)
                .map_err(|e| LimiterError(e.to_string()))?,
            prefix: prefix.to_owned(),
            fallback: InProcessLimiter::default(),
        }))
    }

    /// The script run of a check.
    fn call(&self, check: &Check) -> Call<'static> {
        match check {
            Check::Hit { key, rate } => Call {
                script: &HIT,
                keys: vec![counter_stem(&self.prefix, key, self.redis.clustered())],
                args: vec![rate.count.to_string(), per_ms(*rate).to_string()],
            },
            Check::Cooldown { key, period } => {
                let ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX).max(1);
                Call {
                    script: &COOLDOWN,
                    keys: vec![format!("{}c:{key}", self.prefix)],
                    args: vec![ms.to_string()],
                }
            }
        }
    }

    async fn shared(&self, checks: &[Check]) -> Result<Vec<Decision>, CallError> {
        let calls: Vec<Call<'_>> = checks.iter().map(|c| self.call(c)).collect();
        let waits: Vec<i64> = match calls.as_slice() {
            [] => Vec::new(),
            [one] => vec![
                self.redis
                    .run(one.script, one.keys.clone(), one.args.clone())
                    .await?,
            ],
            _ => self.redis.run_pipelined(&calls).await?,
        };
        Ok(waits.into_iter().map(decision).collect())
    }

    /// This node's own answer to a check, while Redis does not answer.
    fn fallback(&self, check: &Check) -> Decision {
        match check {
            Check::Hit { key, rate } => self.fallback.check(key, *rate),
            Check::Cooldown { key, period } => self.fallback.check_cooldown(key, *period),
        }
    }
}

/// A script's answer: 0 (or nonsense) allowed, else the ms to wait.
fn decision(wait: i64) -> Decision {
    match u64::try_from(wait) {
        Ok(0) | Err(_) => Decision::Allowed,
        Ok(ms) => Decision::Limited {
            retry_after: Duration::from_millis(ms),
        },
    }
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn hit(&self, key: &str, rate: Rate) -> Decision {
        let check = Check::Hit {
            key: key.to_owned(),
            rate,
        };
        self.check_all(std::slice::from_ref(&check)).await[0]
    }

    async fn cooldown(&self, key: &str, period: Duration) -> Decision {
        let check = Check::Cooldown {
            key: key.to_owned(),
            period,
        };
        self.check_all(std::slice::from_ref(&check)).await[0]
    }

    /// One pipelined round trip for all the checks.
    async fn check_all(&self, checks: &[Check]) -> Vec<Decision> {
        match self.shared(checks).await {
            Ok(decisions) => decisions,
            Err(e) => {
                tracing::debug!(error = %e, "rate limits: Redis unavailable, counting on this node");
                checks.iter().map(|c| self.fallback(c)).collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::conformance;
    use crate::redis::testing::{must_connect, test_prefix, LOCAL};

    async fn limiter() -> Arc<RedisLimiter> {
        let l = RedisLimiter::connect(LOCAL, &test_prefix()).unwrap();
        must_connect(&l.redis).await;
        l
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_suite() {
        conformance::run_all(limiter().await).await;
    }

    #[tokio::test]
    async fn nodes_share_counters() {
        let a = limiter().await;
        let b = RedisLimiter::connect(LOCAL, &a.prefix).unwrap();
        must_connect(&b.redis).await;
        let rate = Rate {
            count: 2,
            per: Duration::from_secs(10),
        };
        assert_eq!(a.hit("k", rate).await, Decision::Allowed);
        assert_eq!(b.hit("k", rate).await, Decision::Allowed);
        assert!(matches!(a.hit("k", rate).await, Decision::Limited { .. }));
        assert!(matches!(b.hit("k", rate).await, Decision::Limited { .. }));
        let period = Duration::from_secs(10);
        assert_eq!(a.cooldown("c", period).await, Decision::Allowed);
        assert!(matches!(
            b.cooldown("c", period).await,
            Decision::Limited { .. }
        ));
    }

    #[test]
    fn cluster_counters_of_a_key_share_a_slot() {
        use crate::redis::testing::slot;
        for (prefix, key) in [
            ("chatty:", "ip:203.0.113.7"),
            ("chatty:", "ip:2001:db8::1"),
            ("chatty:", "guest:acme:g-12ab"),
            ("odd{prefix:", "ip:203.0.113.7"),
        ] {
            let stem = counter_stem(prefix, key, true);
            assert_eq!(
                slot(&format!("{stem}123456")),
                slot(&format!("{stem}123455"))
            );
        }
        assert_ne!(
            slot(&counter_stem("chatty:", "ip:203.0.113.7", true)),
            slot(&counter_stem("chatty:", "ip:203.0.113.8", true)),
            "keys spread over slots"
        );
        assert_eq!(counter_stem("chatty:", "ip:1", false), "chatty:l:ip:1:");
    }

    #[tokio::test]
    async fn falls_back_to_this_node_while_redis_is_down() {
        let l = RedisLimiter::connect("redis://127.0.0.1:1", "t:").unwrap();
        let rate = Rate {
            count: 2,
            per: Duration::from_secs(10),
        };
        let t = std::time::Instant::now();
        assert_eq!(l.hit("k", rate).await, Decision::Allowed);
        assert_eq!(l.hit("k", rate).await, Decision::Allowed);
        assert!(matches!(l.hit("k", rate).await, Decision::Limited { .. }));
        let period = Duration::from_secs(10);
        assert_eq!(l.cooldown("c", period).await, Decision::Allowed);
        assert!(matches!(
            l.cooldown("c", period).await,
            Decision::Limited { .. }
        ));
        assert!(t.elapsed() < Duration::from_millis(500));
    }
}
