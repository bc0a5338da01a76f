//! The freshness rule the edge and the API nodes both apply to what they
//! learn of a room's versions (from the bus, from their own writes, from
//! answers of the authority): a version only moves forward, is trusted for
//! at most max-age after the authority last vouched for it, and everything
//! learned is forgotten when the bus drops or falls silent.
//!
//! Plain types with no map and no clock of their own: each side keeps the
//! structure its hot path needs (the edge a sharded, bounded map of packed
//! slots; the API a small map it clears) and asks these for every decision.
//! Times are milliseconds on the caller's monotonic clock; ages are signed,
//! since an observation may be vouched for before the one held.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::etag::RoomVersion;

/// How a version the authority vouches for compares with the one held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// A later version of the same log.
    Later,
    Same,
    /// An earlier version of the same log: a late or reordered word.
    Earlier,
    /// Another log altogether (a room's history was reset): neither is
    /// earlier; the one vouched for last wins.
    Unrelated,
}

/// A version the rule orders.
pub trait Version: Copy {
    /// How `self` compares with `held`.
    fn order(&self, held: &Self) -> Order;
}

impl Version for RoomVersion {
    /// Within an epoch by seq; across epochs unrelated.
    #[inline]
    fn order(&self, held: &Self) -> Order {
        if self.epoch != held.epoch {
            Order::Unrelated
        } else {
            by_number(self.seq, held.seq)
        }
    }
}

/// A members version only goes up.
impl Version for u64 {
    #[inline]
    fn order(&self, held: &Self) -> Order {
        by_number(*self, *held)
    }
}

#[inline]
fn by_number(seen: u64, held: u64) -> Order {
    match seen.cmp(&held) {
        std::cmp::Ordering::Greater => Order::Later,
        std::cmp::Ordering::Equal => Order::Same,
        std::cmp::Ordering::Less => Order::Earlier,
    }
}

/// The rule for one kind of version: how long a confirmation is trusted,
/// and which word of the authority replaces the version held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    max_age_ms: i64,
}

impl Freshness {
    /// Versions trusted for `max_age` after each confirmation (whole
    /// milliseconds, at most 2³¹ − 1 of them).
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age_ms: max_age.as_millis().min(i32::MAX as u128) as i64,
        }
    }

    /// Max-age in milliseconds.
    #[inline]
    pub fn max_age_ms(&self) -> i64 {
        self.max_age_ms
    }

    /// Whether a version confirmed `age_ms` ago may be answered from.
    #[inline]
    pub fn is_fresh(&self, age_ms: i64) -> bool {
        age_ms < self.max_age_ms
    }

    /// Whether the authority's word `seen` is taken (replacing or
    /// confirming the version held). `held` is the version held, if any,
    /// with the age of its confirmation as seen from the moment `seen` was
    /// vouched for (negative when `seen` was vouched for earlier).
    ///
    /// Taken: anything when nothing is held or the held version has
    /// expired; the same or a later version of the same log; another log
    /// when vouched for no earlier than the held confirmation. A taken word
    /// confirms the version from the later of the two moments: a later
    /// version vouched for earlier must still postdate the held one.
    #[inline]
    pub fn accepts<V: Version>(&self, held: Option<(V, i64)>, seen: V) -> bool {
        let Some((held, age_ms)) = held else {
            return true;
        };
        if !self.is_fresh(age_ms) {
            return true;
        }
        match seen.order(&held) {
            Order::Later | Order::Same => true,
            Order::Earlier => false,
            Order::Unrelated => age_ms >= 0,
        }
    }
}

/// Whether versions learned from the bus may be trusted: true from the
/// moment it is heard from until it is lost or falls silent. Readable from
/// any thread (metrics, readiness) while one task feeds it.
#[derive(Debug, Default)]
pub struct BusTrust {
    up: AtomicBool,
    /// Time of the last word of any kind, plus one (0: never).
    last_heard: AtomicU64,
}

impl BusTrust {
    /// True while versions learned from the bus may be answered from.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Time of the last word heard, if any.
    pub fn last_heard(&self) -> Option<u64> {
        match self.last_heard.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n - 1),
        }
    }

    /// The bus was heard from at `now` (a message, or the subscription
    /// made). True when it was not trusted until now.
    pub fn heard(&self, now: u64) -> bool {
        self.last_heard.store(now + 1, Ordering::Relaxed);
        !self.up.swap(true, Ordering::Relaxed)
    }

    /// The subscription was lost: every version learned must be forgotten
    /// (whatever this returns). True when it was trusted until now.
    pub fn lost(&self) -> bool {
        self.up.swap(false, Ordering::Relaxed)
    }

    /// True, once per silence, when the bus was trusted but nothing was
    /// heard for more than `max_silence` before `now`: every version
    /// learned must then be forgotten.
    pub fn fell_silent(&self, now: u64, max_silence: Duration) -> bool {
        let Some(last) = self.last_heard() else {
            return false;
        };
        now.saturating_sub(last) > max_silence.as_millis() as u64 && self.lost()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE_AGE: Duration = Duration::from_secs(5);

    fn v(epoch: u32, seq: u64) -> RoomVersion {
        RoomVersion::new(epoch, seq)
    }

    fn check<V: Version>(held: Option<(V, i64)>, seen: V, taken: bool) {
        assert_eq!(Freshness::new(RULE_AGE).accepts(held, seen), taken);
    }

    #[test]
    fn order_of_versions() {
        assert_eq!(v(1, 6).order(&v(1, 5)), Order::Later);
        assert_eq!(v(1, 5).order(&v(1, 5)), Order::Same);
        assert_eq!(v(1, 4).order(&v(1, 5)), Order::Earlier);
        assert_eq!(v(2, 1).order(&v(1, 5)), Order::Unrelated);
        assert_eq!(v(0, 0).order(&v(1, 5)), Order::Unrelated);
        assert_eq!(3u64.order(&2), Order::Later);
        assert_eq!(2u64.order(&3), Order::Earlier);
    }

    #[test]
    fn fresh_for_less_than_max_age() {
        let rule = Freshness::new(RULE_AGE);
        assert_eq!(rule.max_age_ms(), 5000);
        assert!(rule.is_fresh(-3));
        assert!(rule.is_fresh(4999));
        assert!(!rule.is_fresh(5000));
        let long = Freshness::new(Duration::from_secs(u64::MAX));
        assert_eq!(long.max_age_ms(), i64::from(i32::MAX));
    }

    #[test]
    fn versions_only_move_forward_while_fresh() {
        check(None, v(1, 1), true);
        check(Some((v(1, 5), 10)), v(1, 6), true);
        check(Some((v(1, 5), 10)), v(1, 5), true);
        check(Some((v(1, 5), 10)), v(1, 4), false);
        // A later version vouched for before the held confirmation.
        check(Some((v(1, 5), -2000)), v(1, 6), true);
        check(Some((3u64, 10)), 3, true);
        check(Some((3u64, 10)), 2, false);
    }

    #[test]
    fn another_log_wins_only_when_not_vouched_for_earlier() {
        check(Some((v(1, 50), 200)), v(2, 1), true);
        check(Some((v(1, 50), 0)), v(2, 1), true);
        check(Some((v(1, 50), -100)), v(2, 1), false);
    }

    #[test]
    fn an_expired_version_takes_whatever_comes_next() {
        check(Some((v(1, 5), 5000)), v(1, 3), true);
        check(Some((9u64, 6000)), 1, true);
        check(Some((9u64, 4999)), 1, false);
    }

    #[test]
    fn bus_trust_follows_words_losses_and_silence() {
        let max = Duration::from_secs(1);
        let t = BusTrust::default();
        assert!(!t.is_up());
        assert!(!t.fell_silent(5000, max), "never heard: nothing to forget");
        assert!(t.heard(0));
        assert!(!t.heard(100), "already trusted");
        assert!(t.is_up());
        assert_eq!(t.last_heard(), Some(100));
        assert!(!t.fell_silent(1100, max));
        assert!(t.fell_silent(1101, max));
        assert!(!t.is_up());
        assert!(!t.fell_silent(2000, max), "once per silence");
        assert!(t.heard(2100), "heard again");
        assert!(t.lost());
        assert!(!t.lost());
        assert!(!t.is_up());
    }
}
