//! The harness itself: the fault proxy passes, cuts and hangs a real link.

use std::time::Duration;

use chatty_tests::fault::{FaultProxy, Mode};
use chatty_tests::services::{redis_ping, PrivateRedis};

#[tokio::test]
async fn fault_proxy_passes_cuts_and_hangs() {
    let redis = PrivateRedis::start().await;
    let proxy = FaultProxy::start(redis.port).await;
    redis_ping(proxy.port)
        .await
        .expect("PING through the proxy");
    proxy.set(Mode::Cut).await;
    assert!(
        redis_ping(proxy.port).await.is_err(),
        "a cut link must refuse"
    );
    proxy.set(Mode::Hang).await;
    let hung = tokio::time::timeout(Duration::from_secs(3), redis_ping(proxy.port)).await;
    assert!(
        matches!(hung, Ok(Err(_))),
        "a hung link answers nothing: {hung:?}"
    );
    proxy.set(Mode::Pass).await;
    redis_ping(proxy.port).await.expect("PING after restore");
}
