//! A Lua script run with `EVALSHA`, loaded on first use and reloaded after
//! a Redis restart or a failover forgets it (`NOSCRIPT`). Shared by Redis
//! presence and Redis rate limits.

use fred::clients::Client;
use fred::interfaces::LuaInterface;
use fred::types::FromValue;
use parking_lot::Mutex;

/// One Lua script and its SHA-1, once Redis told us.
#[derive(Debug)]
pub(crate) struct Script {
    src: &'static str,
    sha: Mutex<Option<String>>,
}

impl Script {
    pub(crate) const fn new(src: &'static str) -> Self {
        Self {
            src,
            sha: Mutex::new(None),
        }
    }

    /// Runs the script with `keys` and `args`.
    pub(crate) async fn run<R: FromValue>(
        &self,
        client: &Client,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<R, fred::error::Error> {
        let known = self.sha.lock().clone();
        if let Some(sha) = known {
            match client.evalsha(sha, keys.clone(), args.clone()).await {
                Err(e) if e.details().starts_with("NOSCRIPT") => {}
                other => return other,
            }
        } else {
            // The SHA-1 of a script is the same on every server; `SCRIPT
            // LOAD` tells it (on a Cluster, from any one node).
            let sha: String = client.script_load(self.src).await?;
            *self.sha.lock() = Some(sha);
        }
        // `EVAL` runs on the server that owns the keys and leaves the script
        // in its cache: the node of a Cluster that has not seen it yet, or a
        // promoted replica, learns it here.
        client.eval(self.src, keys, args).await
    }
}
