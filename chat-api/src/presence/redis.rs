//! Presence in Redis, shared by every API node (cluster mode).
//!
//! Per room (`{site}/{room}`): a sorted set `{prefix}p:{room}` of member ids
//! scored by expiry (ms), a hash `{prefix}pn:{room}` of nicks and a string
//! `{prefix}pv:{room}` holding the members version. One global sorted set
//! `{prefix}px` indexes every `"{room} {member id}"` by expiry so that a sweep
//! finds expired members in any room. Every change is one Lua script, timed
//! by Redis' own clock, so versions are bumped atomically and a sweep run
//! by several nodes at once reports each removal once.
//!
//! On a Redis Cluster every key one script touches must hash to one slot,
//! and the sweep touches keys it derives from the index. So there rooms are
//! spread over [`CLUSTER_BUCKETS`] buckets by a hash of the room key, each
//! bucket with its own index, and every key of a bucket carries the bucket's
//! hash tag: `{prefix}{p7}:p:{room}`, `{prefix}{p7}:px`. A bucket lives on
//! one shard, so presence is spread over at most that many shards, and a
//! sweep is one script per bucket. On one server (or behind Sentinel) there
//! is one bucket and no tag.
//!
//! Keys expire an hour after their room's last activity (the index an hour
//! after the last join or heartbeat anywhere), so abandoned rooms leave
//! nothing behind. While Redis is down every call fails within a
//! second with [`PresenceError::Unavailable`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatty_shared::wire::{Member, MembersList};
use chatty_shared::RoomKey;
use fred::types::Value;

use super::{Presence, PresenceError};
use crate::host_token::is_verified;
use crate::redis::{BoundedClient, Script};

/// Upper bound on one presence call, whatever fred does.
const CALL_TIMEOUT: Duration = Duration::from_millis(800);

/// Buckets of rooms on a Redis Cluster (see the module's comment). Every
/// node of a deployment must agree on it: changing it moves every room's
/// keys.
pub const CLUSTER_BUCKETS: u32 = 16;

/// The bucket of a room among `buckets` (FNV-1a of the room key: stable
/// across nodes, builds and versions).
fn bucket_of(key: &str, buckets: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % buckets.max(1)
}

/// The start of every key of `bucket`: the prefix alone with one bucket,
/// else the prefix and the bucket's hash tag.
fn stem(prefix: &str, bucket: u32, buckets: u32) -> String {
    if buckets <= 1 {
        prefix.to_owned()
    } else {
        format!("{prefix}{{p{bucket}}}:")
    }
}

/// KEYS: members zset, nicks hash, version, global index, order zset,
/// verified set.
/// ARGV: member id, nick, ttl ms, room key, 1 for a verified member.
/// Returns {changed, version}.
static UPSERT: Script = Script::new(
    "local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
local exp = now + ttl
local keep = ttl + 3600000
local changed = 0
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old ~= ARGV[2] then
  changed = 1
  if old then redis.call('ZREM', KEYS[5], old .. '\\0' .. ARGV[1]) end
end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then changed = 1 end
redis.call('ZADD', KEYS[1], exp, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[5], 0, ARGV[2] .. '\\0' .. ARGV[1])
if ARGV[5] == '1' then redis.call('SADD', KEYS[6], ARGV[1]) end
redis.call('ZADD', KEYS[4], exp, ARGV[4] .. ' ' .. ARGV[1])
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('PEXPIRE', KEYS[2], keep)
redis.call('PEXPIRE', KEYS[5], keep)
if ARGV[5] == '1' then redis.call('PEXPIRE', KEYS[6], keep) end
if redis.call('PTTL', KEYS[4]) < keep then redis.call('PEXPIRE', KEYS[4], keep) end
local v = tonumber(redis.call('GET', KEYS[3]) or '0')
if changed == 1 or v == 0 then
  changed = 1
  v = math.max(v + 1, now)
end
redis.call('SET', KEYS[3], string.format('%d', v), 'PX', keep)
return {changed, v}
",
);

/// KEYS: as for [`UPSERT`].
/// ARGV: member id, room key. Returns the new version, or -1.
static LEAVE: Script = Script::new(
    "local removed = redis.call('ZREM', KEYS[1], ARGV[1])
local nick = redis.call('HGET', KEYS[2], ARGV[1])
if nick then redis.call('ZREM', KEYS[5], nick .. '\\0' .. ARGV[1]) end
redis.call('SREM', KEYS[6], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[2] .. ' ' .. ARGV[1])
if removed == 0 then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = math.max(tonumber(redis.call('GET', KEYS[3]) or '0') + 1, now)
local keep = math.max(redis.call('PTTL', KEYS[1]), 3600000)
redis.call('SET', KEYS[3], string.format('%d', v), 'PX', keep)
return v
",
);

/// KEYS: as for [`UPSERT`]. ARGV: how many to list.
/// Returns {version, count, nick1 NUL id1, nick2 NUL id2, …}: the first
/// members in the order zset (every score 0: by nick, then id, byte by
/// byte), not the whole room.
static LIST: Script = Script::new(
    "local out = { redis.call('GET', KEYS[3]) or '0', redis.call('ZCARD', KEYS[1]) }
local n = tonumber(ARGV[1])
if n > 0 then
  for _, entry in ipairs(redis.call('ZRANGE', KEYS[5], 0, n - 1)) do
    table.insert(out, entry)
  end
end
return out
",
);

/// KEYS: as for [`UPSERT`]. Returns {id1, nick1, id2, nick2, …} of the
/// verified members.
static VERIFIED: Script = Script::new(
    "local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[6])) do
  local nick = redis.call('HGET', KEYS[2], id)
  if nick then
    table.insert(out, id)
    table.insert(out, nick)
  end
end
return out
",
);

/// KEYS: global index. ARGV: max, key prefix.
/// Returns {room1, version1, room2, version2, …} for the rooms that moved.
static SWEEP: Script = Script::new(
    "local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local seen = {}
local order = {}
for _, entry in ipairs(due) do
  redis.call('ZREM', KEYS[1], entry)
  local sp = string.find(entry, ' ', 1, true)
  if sp then
    local room = string.sub(entry, 1, sp - 1)
    local member = string.sub(entry, sp + 1)
    local z = ARGV[2] .. 'p:' .. room
    local score = redis.call('ZSCORE', z, member)
    if score and tonumber(score) <= now then
      redis.call('ZREM', z, member)
      local nicks = ARGV[2] .. 'pn:' .. room
      local nick = redis.call('HGET', nicks, member)
      if nick then redis.call('ZREM', ARGV[2] .. 'pl:' .. room, nick .. '\\0' .. member) end
      redis.call('SREM', ARGV[2] .. 'pu:' .. room, member)
      redis.call('HDEL', nicks, member)
      if not seen[room] then
        seen[room] = true
        table.insert(order, room)
      end
    end
  end
end
local out = {}
for _, room in ipairs(order) do
  local vk = ARGV[2] .. 'pv:' .. room
  local v = math.max(tonumber(redis.call('GET', vk) or '0') + 1, now)
  local keep = math.max(redis.call('PTTL', ARGV[2] .. 'p:' .. room), 3600000)
  redis.call('SET', vk, string.format('%d', v), 'PX', keep)
  table.insert(out, room)
  table.insert(out, v)
end
return out
",
);

/// A room's keys under `stem`: members zset (by expiry), nicks hash,
/// version, the index of its bucket, the order zset (`nick NUL id`, for the
/// list) and the set of its verified members.
fn room_keys(stem: &str, room: &str) -> Vec<String> {
    vec![
        format!("{stem}p:{room}"),
        format!("{stem}pn:{room}"),
        format!("{stem}pv:{room}"),
        format!("{stem}px"),
        format!("{stem}pl:{room}"),
        format!("{stem}pu:{room}"),
    ]
}

/// Presence kept in Redis.
pub struct RedisPresence {
    redis: BoundedClient,
    prefix: String,
    /// 1, or [`CLUSTER_BUCKETS`] on a Redis Cluster.
    buckets: u32,
    /// The bucket the next sweep starts with, so that a busy bucket does
    /// not keep the others waiting.
    next_sweep: AtomicU32,
}

impl std::fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPresence")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn down(e: impl std::fmt::Display) -> PresenceError {
    PresenceError::Unavailable(e.to_string())
}

fn number(v: &Value) -> Result<u64, PresenceError> {
    match v {
        Value::Integer(i) => u64::try_from(*i).map_err(|_| down("negative version from Redis")),
        other => other
            .as_string()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| down("unexpected reply from Redis")),
    }
}

fn text(v: Value) -> Result<String, PresenceError> {
    v.into_string()
        .ok_or_else(|| down("unexpected reply from Redis"))
}

impl RedisPresence {
    /// Starts connecting in the background (calls fail fast until Redis
    /// answers). Keys live under `prefix`. Needs a tokio runtime.
    pub fn connect(url: &str, prefix: &str) -> Result<Arc<RedisPresence>, PresenceError> {
        let redis = BoundedClient::connect(url, CALL_TIMEOUT).map_err(down)?;
        let buckets = if redis.clustered() {
            CLUSTER_BUCKETS
        } else {
            1
        };
        Ok(Arc::new(RedisPresence {
            redis,
            prefix: prefix.to_owned(),
            buckets,
            next_sweep: AtomicU32::new(0),
        }))
    }

    fn room_keys(&self, key: &RoomKey) -> Vec<String> {
        let room = key.to_string();
        room_keys(
            &stem(&self.prefix, bucket_of(&room, self.buckets), self.buckets),
            &room,
        )
    }

    async fn call<R: fred::types::FromValue>(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<R, PresenceError> {
        self.redis.run(script, keys, args).await.map_err(down)
    }
}

#[async_trait]
impl Presence for RedisPresence {
    async fn upsert(
        &self,
        key: &RoomKey,
        member: &Member,
        ttl: Duration,
    ) -> Result<(bool, u64), PresenceError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let reply: Vec<Value> = self
            .call(
                &UPSERT,
                self.room_keys(key),
                vec![
                    member.id.clone(),
                    member.nick.clone(),
                    ttl_ms.to_string(),
                    key.to_string(),
                    u8::from(is_verified(&member.id)).to_string(),
                ],
            )
            .await?;
        match reply.as_slice() {
            [changed, version] => Ok((number(changed)? == 1, number(version)?)),
            _ => Err(down("unexpected reply from Redis")),
        }
    }

    async fn leave(&self, key: &RoomKey, member_id: &str) -> Result<Option<u64>, PresenceError> {
        let v: i64 = self
            .call(
                &LEAVE,
                self.room_keys(key),
                vec![member_id.to_owned(), key.to_string()],
            )
            .await?;
        Ok(u64::try_from(v).ok())
    }

    async fn list(&self, key: &RoomKey, max: usize) -> Result<(MembersList, u64), PresenceError> {
        let reply: Vec<Value> = self
            .call(&LIST, self.room_keys(key), vec![max.to_string()])
            .await?;
        let mut items = reply.into_iter();
        let mut next = || items.next().ok_or_else(|| down("short reply from Redis"));
        let version = number(&next()?)?;
        let count = number(&next()?)?;
        let members = items
            .map(|entry| {
                let entry = text(entry)?;
                let (nick, id) = entry
                    .split_once('\0')
                    .ok_or_else(|| down("unexpected reply from Redis"))?;
                Ok(Member {
                    id: id.to_owned(),
                    nick: nick.to_owned(),
                })
            })
            .collect::<Result<_, PresenceError>>()?;
        Ok((MembersList { members, count }, version))
    }

    async fn verified(&self, key: &RoomKey) -> Result<Vec<Member>, PresenceError> {
        let reply: Vec<Value> = self
            .call(&VERIFIED, self.room_keys(key), Vec::new())
            .await?;
        let mut items = reply.into_iter();
        let mut members = Vec::new();
        while let (Some(id), Some(nick)) = (items.next(), items.next()) {
            members.push(Member {
                id: text(id)?,
                nick: text(nick)?,
            });
        }
        Ok(members)
    }

    async fn sweep(&self, max: usize) -> Result<Vec<(RoomKey, u64)>, PresenceError> {
        let first = self.next_sweep.fetch_add(1, Ordering::Relaxed);
        let mut out = Vec::new();
        for i in 0..self.buckets {
            let left = max.saturating_sub(out.len());
            if left == 0 {
                break;
            }
            let stem = stem(&self.prefix, (first + i) % self.buckets, self.buckets);
            let reply: Vec<Value> = self
                .call(
                    &SWEEP,
                    vec![format!("{stem}px")],
                    vec![left.to_string(), stem],
                )
                .await?;
            let mut items = reply.into_iter();
            while let (Some(room), Some(version)) = (items.next(), items.next()) {
                let room = text(room)?;
                // Keys were written by this code from valid room keys; skip
                // anything else rather than fail the whole sweep.
                if let Ok(key) = RoomKey::parse(&room) {
                    out.push((key, number(&version)?));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presence::conformance;
    use crate::redis::testing::{must_connect, slot, test_prefix, LOCAL};
    use fred::interfaces::KeysInterface;

    async fn presence() -> Arc<RedisPresence> {
        let p = RedisPresence::connect(LOCAL, &test_prefix()).unwrap();
        must_connect(&p.redis).await;
        p
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_suite() {
        conformance::run_all(presence().await).await;
    }

    #[tokio::test]
    async fn versions_survive_a_forgetful_redis() {
        let p = presence().await;
        let key = RoomKey::new("demo", "lobby").unwrap();
        let a = Member {
            id: "a".into(),
            nick: "A".into(),
        };
        let mut last = 0;
        for i in 0..3 {
            let m = Member {
                nick: format!("A{i}"),
                ..a.clone()
            };
            last = p.join(&key, &m, Duration::from_secs(30)).await.unwrap();
        }
        // What a restart of a non-persistent Redis does to this prefix.
        let keys: Vec<String> = p.room_keys(&key);
        let _: i64 = p.redis.inner().del(keys).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let v = p.join(&key, &a, Duration::from_secs(30)).await.unwrap();
        assert!(v > last, "{v} after {last}");
        assert_eq!(
            p.list(&key, 10).await.unwrap(),
            (MembersList::capped(vec![a]), v)
        );
    }

    #[test]
    fn cluster_keys_of_a_room_share_its_bucket_slot() {
        for (prefix, room) in [
            ("chatty:", "demo/lobby"),
            ("chatty:", "acme/a-much-longer_room-name"),
            ("t1a2b3c4:", "x/y"),
            ("odd{prefix:", "demo/lobby"),
        ] {
            let b = bucket_of(room, CLUSTER_BUCKETS);
            let keys = room_keys(&stem(prefix, b, CLUSTER_BUCKETS), room);
            let s = slot(&keys[0]);
            for k in &keys {
                assert_eq!(slot(k), s, "{k} and {}", keys[0]);
            }
            // The sweep's keys for that bucket: its index, and the keys it
            // derives from the stem it is given.
            let sweep_stem = stem(prefix, b, CLUSTER_BUCKETS);
            assert_eq!(slot(&format!("{sweep_stem}px")), s);
            for derived in ["p", "pn", "pl", "pu"] {
                assert_eq!(slot(&format!("{sweep_stem}{derived}:{room}")), s);
            }
        }
        let all: std::collections::HashSet<u16> = (0..CLUSTER_BUCKETS)
            .map(|b| slot(&format!("chatty:{{p{b}}}:px")))
            .collect();
        assert!(all.len() > 8, "buckets spread over slots: {all:?}");
        // One server: the keys are the plain ones, as before buckets.
        assert_eq!(
            room_keys(&stem("chatty:", 0, 1), "demo/lobby"),
            [
                "chatty:p:demo/lobby",
                "chatty:pn:demo/lobby",
                "chatty:pv:demo/lobby",
                "chatty:px",
                "chatty:pl:demo/lobby",
                "chatty:pu:demo/lobby"
            ]
        );
        assert_eq!(bucket_of("demo/lobby", 1), 0);
        assert_eq!(
            bucket_of("demo/lobby", CLUSTER_BUCKETS),
            bucket_of("demo/lobby", 16)
        );
    }

    #[tokio::test]
    async fn unreachable_redis_fails_fast() {
        let p = RedisPresence::connect("redis://127.0.0.1:1", "t:").unwrap();
        let key = RoomKey::new("demo", "lobby").unwrap();
        let m = Member {
            id: "a".into(),
            nick: "A".into(),
        };
        let t = std::time::Instant::now();
        assert!(p.join(&key, &m, Duration::from_secs(1)).await.is_err());
        assert!(p.list(&key, 10).await.is_err());
        assert!(p.sweep(10).await.is_err());
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
