//! A Lua script run with `EVALSHA`, and with `EVAL` on a server that does
//! not know it (`NOSCRIPT`: a restart, a failover, a Cluster node that has
//! not seen it yet); several runs can go in one pipelined round trip.
//! Shared by Redis presence and Redis rate limits.

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

    /// The script's SHA-1. It is the same on every server; `SCRIPT LOAD`
    /// tells it the first time (on a Cluster, from any one node).
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
            // `EVAL` runs on the server that owns the keys and leaves the
            // script in its cache: that server learns it here.
            Err(e) if is_forgotten(&e) => client.eval(self.src, keys, args).await,
            other => other,
        }
    }
}

/// The server does not know the script.
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
/// order; when a server did not know a script, the pipeline is sent once
/// more with each script's source (`EVAL`), which teaches it.
pub(crate) async fn run_pipelined<R: FromValue>(
    client: &Client,
    calls: &[Call<'_>],
) -> Result<Vec<R>, fred::error::Error> {
    let answers = send_pipeline::<R>(client, calls, false).await?;
    if !answers
        .iter()
        .any(|a| matches!(a, Err(e) if is_forgotten(e)))
    {
        return answers.into_iter().collect();
    }
    send_pipeline::<R>(client, calls, true)
        .await?
        .into_iter()
        .collect()
}

/// One pipeline of `EVALSHA` (or, `by_source`, `EVAL`) calls.
async fn send_pipeline<R: FromValue>(
    client: &Client,
    calls: &[Call<'_>],
    by_source: bool,
) -> Result<Vec<Result<R, fred::error::Error>>, fred::error::Error> {
    let pipeline = client.pipeline();
    for call in calls {
        let script: Value = if by_source {
            call.script.src.into()
        } else {
            call.script.sha(client).await?.into()
        };
        let mut args: Vec<Value> = Vec::with_capacity(2 + call.keys.len() + call.args.len());
        args.push(script);
        args.push(Value::Integer(call.keys.len() as i64));
        args.extend(call.keys.iter().map(|k| Value::from(k.as_str())));
        args.extend(call.args.iter().map(|a| Value::from(a.as_str())));
        // Routed on a Redis Cluster by the first key (after the script and
        // the key count), as EVALSHA itself would be.
        let name = if by_source { "EVAL" } else { "EVALSHA" };
        let command = CustomCommand::new(name, ClusterHash::Offset(2), false);
        let _: Value = pipeline.custom(command, args).await?;
    }
    Ok(pipeline.try_all::<R>().await)
}
