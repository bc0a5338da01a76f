//! Presence: who is in a room right now, with a members version that moves
//! on every change and never repeats.
//!
//! A member stays listed until `ttl` passes without a join or heartbeat and
//! a [`Presence::sweep`] removes them (so a list and its version always
//! agree: a member past their ttl is still listed until swept, and the sweep
//! bumps the version). Versions are `max(previous + 1, now in ms)`, computed
//! atomically, so even when the previous version is forgotten (a restart of
//! the process or of a non-persistent Redis) the next one is larger than any
//! handed out before — as long as a room did not change faster than once a
//! millisecond, on average, since the clock last caught up with it.
//!
//! Two implementations: [`InProcessPresence`] (embedded mode) and
//! [`RedisPresence`] (cluster mode, shared by every API node).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chatty_shared::wire::{Member, MembersList};
use chatty_shared::RoomKey;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::host_token::is_verified;

#[cfg(test)]
mod conformance;
mod redis;

pub use redis::RedisPresence;

/// Why a presence call failed.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// The backend is down or slow, or (in process) full.
    #[error("presence unavailable: {0}")]
    Unavailable(String),
}

/// The members of every room.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Adds or refreshes a member for `ttl`: `(changed, version)`, where
    /// `changed` says the member was absent or their nick changed, and the
    /// room's members version moved.
    async fn upsert(
        &self,
        key: &RoomKey,
        member: &Member,
        ttl: Duration,
    ) -> Result<(bool, u64), PresenceError>;
    /// Adds or refreshes a member; returns the room's members version,
    /// bumped if the member was absent or their nick changed.
    async fn join(
        &self,
        key: &RoomKey,
        member: &Member,
        ttl: Duration,
    ) -> Result<u64, PresenceError> {
        self.upsert(key, member, ttl).await.map(|(_, v)| v)
    }
    /// Refreshes a member; `Some(new version)` if they had to be re-added
    /// (or their nick changed).
    async fn heartbeat(
        &self,
        key: &RoomKey,
        member: &Member,
        ttl: Duration,
    ) -> Result<Option<u64>, PresenceError> {
        self.upsert(key, member, ttl)
            .await
            .map(|(changed, v)| changed.then_some(v))
    }
    /// Removes a member at once; `Some(new version)` if they were there.
    async fn leave(&self, key: &RoomKey, member_id: &str) -> Result<Option<u64>, PresenceError>;
    /// The room's first `max` members (ordered by nick, then id), how many
    /// it has, and its version (0 if it never had any, or has been empty for
    /// a while). Reads `max` members, not the whole room: a live event's
    /// room of tens of thousands is listed on every join.
    async fn list(&self, key: &RoomKey, max: usize) -> Result<(MembersList, u64), PresenceError>;
    /// The verified members present (signed-in users of the site, whose
    /// names guests may not take), in any order.
    async fn verified(&self, key: &RoomKey) -> Result<Vec<Member>, PresenceError>;
    /// Removes up to `max` members past their ttl, in any room, and returns
    /// the rooms whose version moved. Safe to call from several nodes at
    /// once: only the caller that removed an entry reports its room.
    async fn sweep(&self, max: usize) -> Result<Vec<(RoomKey, u64)>, PresenceError>;
}

/// Milliseconds since the Unix epoch, by the wall clock.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The next version after `previous` at wall-clock time `now_ms`.
fn next_version(previous: u64, now_ms: u64) -> u64 {
    previous.saturating_add(1).max(now_ms)
}

/// Default cap on the members [`InProcessPresence`] tracks.
pub const DEFAULT_MAX_MEMBERS: usize = 200_000;

#[derive(Debug, Default)]
struct RoomState {
    /// member id → (nick, expiry).
    members: HashMap<String, (String, Instant)>,
    /// `(nick, id)` of every member: the list's order.
    order: BTreeSet<(String, String)>,
    version: u64,
}

impl RoomState {
    fn remove(&mut self, id: &str) -> Option<Instant> {
        let (nick, at) = self.members.remove(id)?;
        self.order.remove(&(nick, id.to_owned()));
        Some(at)
    }
}

#[derive(Debug, Default)]
struct State {
    rooms: HashMap<RoomKey, RoomState>,
    /// Every member by expiry, for the sweep.
    expiry: BTreeSet<(Instant, RoomKey, String)>,
    /// Rooms left empty, forgotten once their version is in the past.
    emptied: Vec<RoomKey>,
}

/// Presence inside one process (embedded mode). Memory is bounded: at most
/// `max_members` members are tracked (joins beyond that fail as
/// unavailable), swept members are dropped, and rooms left empty are
/// forgotten once their version is in the past (so a new version, taken
/// from the clock, is still larger).
#[derive(Debug)]
pub struct InProcessPresence {
    state: Mutex<State>,
    max_members: usize,
}

impl Default for InProcessPresence {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MEMBERS)
    }
}

impl InProcessPresence {
    pub fn new(max_members: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            max_members,
        }
    }

    /// Adds or refreshes a member: `(changed, version)`.
    fn upsert_now(
        &self,
        key: &RoomKey,
        member: &Member,
        ttl: Duration,
    ) -> Result<(bool, u64), PresenceError> {
        let expires = Instant::now() + ttl;
        let mut guard = self.state.lock();
        let state = &mut *guard;
        let total = state.expiry.len();
        let room = state.rooms.entry(key.clone()).or_default();
        let changed = match room.members.get_mut(&member.id) {
            Some((nick, at)) => {
                state.expiry.remove(&(*at, key.clone(), member.id.clone()));
                *at = expires;
                let renamed = *nick != member.nick;
                if renamed {
                    let old = std::mem::replace(nick, member.nick.clone());
                    room.order.remove(&(old, member.id.clone()));
                    room.order.insert((member.nick.clone(), member.id.clone()));
                }
                renamed
            }
            None => {
                if total >= self.max_members {
                    let empty = room.members.is_empty() && room.version == 0;
                    if empty {
                        state.rooms.remove(key);
                    }
                    return Err(PresenceError::Unavailable(format!(
                        "presence is full ({} members)",
                        self.max_members
                    )));
                }
                room.members
                    .insert(member.id.clone(), (member.nick.clone(), expires));
                room.order.insert((member.nick.clone(), member.id.clone()));
                true
            }
        };
        if changed {
            room.version = next_version(room.version, now_ms());
        }
        let version = room.version;
        state
            .expiry
            .insert((expires, key.clone(), member.id.clone()));
        Ok((changed, version))
    }

    /// Forgets rooms left empty whose version is in the past.
    fn forget_empty(state: &mut State, now_ms: u64) {
        let State { rooms, emptied, .. } = state;
        emptied.retain(|key| match rooms.get(key) {
            Some(room) if room.members.is_empty() => {
                if room.version < now_ms {
                    rooms.remove(key);
                    false
                } else {
                    true
                }
            }
            _ => false,
        });
    }
}

#[async_trait]
impl Presence for InProcessPresence {
    async fn upsert(
        &self,
        key: &RoomKey,
        member: &Member,
        ttl: Duration,
    ) -> Result<(bool, u64), PresenceError> {
        self.upsert_now(key, member, ttl)
    }

    async fn leave(&self, key: &RoomKey, member_id: &str) -> Result<Option<u64>, PresenceError> {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        let Some(room) = state.rooms.get_mut(key) else {
            return Ok(None);
        };
        let Some(at) = room.remove(member_id) else {
            return Ok(None);
        };
        state
            .expiry
            .remove(&(at, key.clone(), member_id.to_owned()));
        room.version = next_version(room.version, now_ms());
        let version = room.version;
        if room.members.is_empty() {
            state.emptied.push(key.clone());
        }
        Ok(Some(version))
    }

    async fn list(&self, key: &RoomKey, max: usize) -> Result<(MembersList, u64), PresenceError> {
        let state = self.state.lock();
        let Some(room) = state.rooms.get(key) else {
            return Ok((MembersList::default(), 0));
        };
        let members = room
            .order
            .iter()
            .take(max)
            .map(|(nick, id)| Member {
                id: id.clone(),
                nick: nick.clone(),
            })
            .collect();
        let list = MembersList {
            members,
            count: room.members.len() as u64,
        };
        Ok((list, room.version))
    }

    async fn verified(&self, key: &RoomKey) -> Result<Vec<Member>, PresenceError> {
        let state = self.state.lock();
        let Some(room) = state.rooms.get(key) else {
            return Ok(Vec::new());
        };
        Ok(room
            .members
            .iter()
            .filter(|(id, _)| is_verified(id))
            .map(|(id, (nick, _))| Member {
                id: id.clone(),
                nick: nick.clone(),
            })
            .collect())
    }

    async fn sweep(&self, max: usize) -> Result<Vec<(RoomKey, u64)>, PresenceError> {
        let now = Instant::now();
        let wall = now_ms();
        let mut guard = self.state.lock();
        let state = &mut *guard;
        Self::forget_empty(state, wall);
        let mut moved: Vec<RoomKey> = Vec::new();
        for _ in 0..max {
            let Some(first) = state.expiry.first() else {
                break;
            };
            if first.0 > now {
                break;
            }
            let Some((_, key, id)) = state.expiry.pop_first() else {
                break;
            };
            if let Some(room) = state.rooms.get_mut(&key) {
                room.remove(&id);
                if !moved.contains(&key) {
                    moved.push(key);
                }
            }
        }
        let mut out = Vec::with_capacity(moved.len());
        for key in moved {
            if let Some(room) = state.rooms.get_mut(&key) {
                room.version = next_version(room.version, wall);
                out.push((key.clone(), room.version));
                if room.members.is_empty() {
                    state.emptied.push(key);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn versions_move_forward_and_follow_the_clock() {
        assert_eq!(next_version(0, 1_000), 1_000);
        assert_eq!(next_version(1_000, 1_000), 1_001);
        assert_eq!(next_version(5_000, 1_000), 5_001);
        assert_eq!(next_version(u64::MAX, 1), u64::MAX);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_suite() {
        conformance::run_all(Arc::new(InProcessPresence::default())).await;
    }

    #[tokio::test]
    async fn a_new_process_never_repeats_a_version() {
        let key = RoomKey::new("demo", "lobby").unwrap();
        let m = Member {
            id: "m1".into(),
            nick: "a".into(),
        };
        let old = InProcessPresence::default();
        let mut last = 0;
        for i in 0..3 {
            let nick = Member {
                nick: format!("n{i}"),
                ..m.clone()
            };
            last = old
                .join(&key, &nick, Duration::from_secs(30))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        let new = InProcessPresence::default();
        let v = new.join(&key, &m, Duration::from_secs(30)).await.unwrap();
        assert!(v > last, "{v} after {last}");
    }

    #[tokio::test]
    async fn memory_is_bounded() {
        let p = InProcessPresence::new(3);
        let ttl = Duration::from_millis(50);
        for i in 0..3 {
            let key = RoomKey::new("demo", &format!("r{i}")).unwrap();
            let m = Member {
                id: format!("m{i}"),
                nick: "x".into(),
            };
            p.join(&key, &m, ttl).await.unwrap();
        }
        let key = RoomKey::new("demo", "full").unwrap();
        let m = Member {
            id: "late".into(),
            nick: "x".into(),
        };
        assert!(p.join(&key, &m, ttl).await.is_err());
        assert_eq!(
            p.state.lock().rooms.len(),
            3,
            "a refused join leaves no room behind"
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(p.sweep(100).await.unwrap().len(), 3);
        tokio::time::sleep(Duration::from_millis(2)).await;
        p.sweep(100).await.unwrap();
        {
            let state = p.state.lock();
            assert!(state.rooms.is_empty(), "empty rooms are forgotten");
            assert!(state.expiry.is_empty());
            assert!(state.emptied.is_empty());
        }
        p.join(&key, &m, ttl).await.unwrap();
    }
}
