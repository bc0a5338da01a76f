//! A Lua script run with `EVALSHA`, loaded on first use and reloaded after
//! a Redis restart or failover forgets it (`NOSCRIPT`); several runs can go
//! in one pipelined round trip. Shared by Redis presence and Redis rate
//! limits.

use fred::clients::Client;
use fred::interfaces::{ClientLike, LuaInterface};
use fred::types::{ClusterHash, CustomCommand, FromValue, Value};
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

    /// The script's SHA-1, loading it into Redis when not known yet.
    async fn sha(&self, client: &Client) -> Result<String, fred::error::Error> {
        let known = self.sha.lock().clone();
        if let Some(sha) = known {
            return Ok(sha);
        }
        let sha: String = client.script_load(self.src).await?;
        *self.sha.lock() = Some(sha.clone());
        Ok(sha)
    }

    /// Runs the script with `keys` and `args`.
    pub(crate) async fn run<R: FromValue>(
        &self,
        client: &Client,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<R, fred::error::Error> {
        let sha = self.sha(client).await?;
        match client.evalsha(sha, keys.clone(), args.clone()).await {
            Err(e) if is_forgotten(&e) => {
                self.forget();
                client.evalsha(self.sha(client).await?, keys, args).await
            }
            other => other,
        }
    }

    fn forget(&self) {
        *self.sha.lock() = None;
    }
}

/// Redis no longer knows the script (it restarted, or failed over to a
/// server that never loaded it).
fn is_forgotten(e: &fred::error::Error) -> bool {
    e.details().starts_with("NOSCRIPT")
}

/// One script run of a pipeline: the script, its keys and its arguments.
pub(crate) struct Call<'a> {
    pub script: &'a Script,
    pub keys: Vec<String>,
    pub args: Vec<String>,
}

/// Runs every call in one pipelined round trip and answers in the same
/// order; a Redis that forgot a script (`NOSCRIPT`) has them loaded again
/// and the pipeline sent once more.
pub(crate) async fn run_pipelined<R: FromValue>(
    client: &Client,
    calls: &[Call<'_>],
) -> Result<Vec<R>, fred::error::Error> {
    let answers = send_pipeline::<R>(client, calls).await?;
    if !answers
        .iter()
        .any(|a| matches!(a, Err(e) if is_forgotten(e)))
    {
        return answers.into_iter().collect();
    }
    for call in calls {
        call.script.forget();
    }
    send_pipeline::<R>(client, calls)
        .await?
        .into_iter()
        .collect()
}

async fn send_pipeline<R: FromValue>(
    client: &Client,
    calls: &[Call<'_>],
) -> Result<Vec<Result<R, fred::error::Error>>, fred::error::Error> {
    let pipeline = client.pipeline();
    for call in calls {
        let sha = call.script.sha(client).await?;
        let mut args: Vec<Value> = Vec::with_capacity(2 + call.keys.len() + call.args.len());
        args.push(sha.into());
        args.push(Value::Integer(call.keys.len() as i64));
        args.extend(call.keys.iter().map(|k| Value::from(k.as_str())));
        args.extend(call.args.iter().map(|a| Value::from(a.as_str())));
        // Routed on Redis Cluster by the first key (after the SHA and the
        // key count), as EVALSHA itself would be.
        let evalsha = CustomCommand::new("EVALSHA", ClusterHash::Offset(2), false);
        let _: Value = pipeline.custom(evalsha, args).await?;
    }
    Ok(pipeline.try_all::<R>().await)
}
