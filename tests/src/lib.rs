//! The integration harness: free ports, the real binaries started as child
//! processes, private Redis servers, fresh MariaDB databases and a TCP fault
//! proxy. Every helper fails loudly, saying how to fix the machine, when a
//! service the suite needs is missing.

pub mod answer;
pub mod attack;
pub mod browser;
pub mod chat;
pub mod edge_polls;
pub mod fault;
pub mod host;
pub mod load;
pub mod procs;
pub mod raw;
pub mod redis_cluster;
pub mod scrape;
pub mod sentinel;
pub mod services;
pub mod sse;
pub mod stack;

use std::time::{Duration, Instant};

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// A short random lowercase suffix for database names and key prefixes.
pub fn unique(prefix: &str) -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().gen();
    format!("{prefix}{n:016x}")
}

/// Polls `f` every 20 ms until it returns `Some`, or panics with `what` after
/// `limit`.
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `f`, failing the test if it takes longer than `limit`.
pub async fn bounded<F: std::future::Future>(limit: Duration, what: &str, f: F) -> F::Output {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {limit:?}"))
}

/// An HTTP client with short timeouts and no connection reuse surprises.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("http client")
}

/// Tests that load the whole machine (a fault run under generated load,
/// hundreds of parked guests, floods of connections or rooms) or that
/// bound the edge's timing (push at once, presence within its interval,
/// release within max-age) hold this while they run, so that at most one
/// of them runs at a time; lighter tests run beside it. On a 2-core machine
/// two of them side by side starve each other's processes for seconds (a
/// bus silent for a second makes the edge forget its map and release every
/// parked guest), and what they assert (no failed request, one fetch per
/// message, a push within a bound) is about Chatty, not about the machine's
/// share of CPU.
pub async fn heavy() -> tokio::sync::MutexGuard<'static, ()> {
    static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    HEAVY.lock().await
}
