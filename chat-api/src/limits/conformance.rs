//! The rate-limit conformance suite: what every [`Limiter`] must do, run
//! against the in-process one and Redis alike (real time, short windows).

use std::sync::Arc;
use std::time::Duration;

use chatty_shared::Rate;

use super::{Check, Decision, Limiter};

fn key(name: &str) -> String {
    format!("{name}:{:08x}", rand::random::<u32>())
}

/// Runs every check in turn.
pub(crate) async fn run_all(l: Arc<dyn Limiter>) {
    counts_up_to_the_limit(&*l).await;
    keys_are_independent(&*l).await;
    allows_again_after_retry_after(&*l).await;
    concurrent_hits(l.clone()).await;
    cooldown_one_hit_per_period(&*l).await;
    concurrent_cooldown(l.clone()).await;
    checks_together(&*l).await;
}

/// Checks asked together answer in order, each as if asked alone, and
/// each counts whatever the others answer.
async fn checks_together(l: &dyn Limiter) {
    let (a, b, c) = (key("all-a"), key("all-b"), key("all-c"));
    let one = Rate {
        count: 1,
        per: Duration::from_secs(10),
    };
    let period = Duration::from_secs(10);
    let checks = [
        Check::Hit {
            key: a.clone(),
            rate: one,
        },
        Check::Hit {
            key: b.clone(),
            rate: Rate { count: 2, ..one },
        },
        Check::Cooldown {
            key: c.clone(),
            period,
        },
    ];
    let first = l.check_all(&checks).await;
    assert_eq!(first, vec![Decision::Allowed; 3]);
    let second = l.check_all(&checks).await;
    assert!(matches!(second[0], Decision::Limited { .. }), "{second:?}");
    assert_eq!(second[1], Decision::Allowed, "b counts on though a refused");
    assert!(matches!(second[2], Decision::Limited { .. }), "{second:?}");
    assert!(matches!(
        l.hit(&b, Rate { count: 2, ..one }).await,
        Decision::Limited { .. }
    ));
    assert!(matches!(
        l.cooldown(&c, period).await,
        Decision::Limited { .. }
    ));
    assert!(l.check_all(&[]).await.is_empty());
}

/// A cooldown lets one hit through per period and tells the time left.
async fn cooldown_one_hit_per_period(l: &dyn Limiter) {
    let (k, other) = (key("cool"), key("cool-other"));
    let period = Duration::from_millis(400);
    assert_eq!(l.cooldown(&k, period).await, Decision::Allowed);
    let left = match l.cooldown(&k, period).await {
        Decision::Limited { retry_after } => retry_after,
        Decision::Allowed => panic!("a second hit inside the period allowed"),
    };
    assert!(left > Duration::ZERO && left <= period, "{left:?}");
    assert_eq!(l.cooldown(&other, period).await, Decision::Allowed);
    tokio::time::sleep(left + Duration::from_millis(20)).await;
    assert_eq!(
        l.cooldown(&k, period).await,
        Decision::Allowed,
        "after {left:?}"
    );
}

/// Concurrent hits on one cooling key: exactly one gets through.
async fn concurrent_cooldown(l: Arc<dyn Limiter>) {
    let k = key("cool-race");
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (l, k) = (l.clone(), k.clone());
            tokio::spawn(async move {
                l.cooldown(&k, Duration::from_secs(30)).await == Decision::Allowed
            })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        if t.await.expect("cooldown task") {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 1);
}

/// `count` hits pass, the next is refused with a sensible wait.
async fn counts_up_to_the_limit(l: &dyn Limiter) {
    let k = key("count");
    let rate = Rate {
        count: 5,
        per: Duration::from_secs(10),
    };
    for _ in 0..5 {
        assert_eq!(l.hit(&k, rate).await, Decision::Allowed);
    }
    for _ in 0..3 {
        match l.hit(&k, rate).await {
            Decision::Limited { retry_after } => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(20));
            }
            Decision::Allowed => panic!("hit over the limit allowed"),
        }
    }
}

/// One key's hits never count against another.
async fn keys_are_independent(l: &dyn Limiter) {
    let rate = Rate {
        count: 1,
        per: Duration::from_secs(10),
    };
    let (a, b) = (key("a"), key("b"));
    assert_eq!(l.hit(&a, rate).await, Decision::Allowed);
    assert!(matches!(l.hit(&a, rate).await, Decision::Limited { .. }));
    assert_eq!(l.hit(&b, rate).await, Decision::Allowed);
}

/// Waiting as long as told is enough.
async fn allows_again_after_retry_after(l: &dyn Limiter) {
    let k = key("wait");
    let rate = Rate {
        count: 3,
        per: Duration::from_millis(300),
    };
    let mut allowed = 0;
    let mut waited = false;
    for _ in 0..20 {
        match l.hit(&k, rate).await {
            Decision::Allowed => allowed += 1,
            Decision::Limited { retry_after } => {
                assert!(retry_after <= Duration::from_millis(600), "{retry_after:?}");
                tokio::time::sleep(retry_after + Duration::from_millis(5)).await;
                assert_eq!(
                    l.hit(&k, rate).await,
                    Decision::Allowed,
                    "after {retry_after:?}"
                );
                allowed += 1;
                waited = true;
            }
        }
    }
    assert!(waited && allowed > 3);
}

/// Concurrent hits on one key: exactly `count` get through.
async fn concurrent_hits(l: Arc<dyn Limiter>) {
    let k = key("race");
    let rate = Rate {
        count: 10,
        per: Duration::from_secs(30),
    };
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let (l, k) = (l.clone(), k.clone());
            tokio::spawn(async move { l.hit(&k, rate).await == Decision::Allowed })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        if t.await.expect("hit task") {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 10);
}
