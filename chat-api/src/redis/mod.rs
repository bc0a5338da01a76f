//! A Redis client whose every call is bounded in time and fails at once
//! while Redis is not connected; shared by Redis presence and Redis rate
//! limits, each with its own bound.

use std::future::Future;
use std::time::Duration;

use chatty_shared::{redis_builder, start_connecting};
use fred::clients::Client;
use fred::interfaces::ClientLike;
use fred::types::FromValue;

mod script;

pub(crate) use script::{Call, Script};

/// Why a bounded Redis call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// The URL or client configuration was refused.
    #[error("{0}")]
    Config(String),
    /// No connection yet, or it dropped: failing at once beats waiting.
    #[error("Redis not connected")]
    NotConnected,
    /// Redis did not answer within the client's bound.
    #[error("Redis did not answer in time")]
    Timeout,
    /// Redis answered with an error.
    #[error(transparent)]
    Redis(#[from] fred::error::Error),
}

/// A Redis client with a bound on every call.
pub(crate) struct BoundedClient {
    client: Client,
    limit: Duration,
}

impl BoundedClient {
    /// Starts connecting in the background (calls fail fast until Redis
    /// answers); every call is then bounded by `limit`. Needs a tokio
    /// runtime.
    pub(crate) fn connect(url: &str, limit: Duration) -> Result<BoundedClient, CallError> {
        let client = redis_builder(url)
            .map_err(|e| CallError::Config(e.to_string()))?
            .build()
            .map_err(|e| CallError::Config(e.to_string()))?;
        start_connecting(&client);
        Ok(BoundedClient { client, limit })
    }

    /// Waits up to `within` for the first connection (for tests and
    /// start-up logs; calls work without it).
    #[cfg(test)]
    pub(crate) async fn wait_connected(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while !self.client.is_connected() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Whether the client talks to a Redis Cluster, where every key one
    /// script touches must hash to one slot.
    pub(crate) fn clustered(&self) -> bool {
        self.client.is_clustered()
    }

    /// The client itself, for tests that reach under the bounded calls.
    #[cfg(test)]
    pub(crate) fn inner(&self) -> &Client {
        &self.client
    }

    /// Runs `script` with `keys` and `args`.
    pub(crate) async fn run<R: FromValue>(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<R, CallError> {
        self.bounded(script.run(&self.client, keys, args)).await
    }

    /// Runs every call in one pipelined round trip, answers in order.
    pub(crate) async fn run_pipelined<R: FromValue>(
        &self,
        calls: &[Call<'_>],
    ) -> Result<Vec<R>, CallError> {
        self.bounded(script::run_pipelined(&self.client, calls))
            .await
    }

    async fn bounded<R>(
        &self,
        call: impl Future<Output = Result<R, fred::error::Error>>,
    ) -> Result<R, CallError> {
        if !self.client.is_connected() {
            return Err(CallError::NotConnected);
        }
        Ok(tokio::time::timeout(self.limit, call)
            .await
            .map_err(|_| CallError::Timeout)??)
    }
}

impl std::fmt::Debug for BoundedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedClient")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// What the tests of the Redis implementations share.
#[cfg(test)]
pub(crate) mod testing {
    use std::time::Duration;

    use super::BoundedClient;

    /// The local Redis the tests use.
    pub(crate) const LOCAL: &str = "redis://127.0.0.1:6379";

    const HOW_TO_START: &str =
        "start Redis: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save ''";

    /// A key prefix of its own for one test.
    pub(crate) fn test_prefix() -> String {
        format!("t{:08x}:", rand::random::<u32>())
    }

    /// Redis Cluster's key slot (CRC16 of the hash tag, if any), as the
    /// Cluster specification defines it.
    pub(crate) fn slot(key: &str) -> u16 {
        let bytes = key.as_bytes();
        let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
            let close = bytes[open + 1..].iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &bytes[open + 1..open + 1 + close])
        });
        let mut crc: u16 = 0;
        for &b in tagged.unwrap_or(bytes) {
            crc ^= u16::from(b) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc % 16384
    }

    #[test]
    fn slots_as_redis_computes_them() {
        // The specification's check value, and its hash-tag examples.
        assert_eq!(slot("123456789"), 0x31c3);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_ne!(slot("foo{}{bar}"), slot("bar"));
        assert_eq!(slot("foo{{bar}}zap"), slot("{bar"));
        assert_eq!(slot("foo{bar}{zap}"), slot("bar"));
    }

    /// Waits for `client` to connect, failing the test with how to start
    /// Redis if it does not.
    pub(crate) async fn must_connect(client: &BoundedClient) {
        assert!(
            client.wait_connected(Duration::from_secs(3)).await,
            "{HOW_TO_START}"
        );
    }
}
