//! Presence without heartbeats: the guests holding a poll or a stream at
//! this edge (their request carries their bearer token) are present, and
//! the edge tells an API node so, one batched report per room per
//! `--presence-every` (`POST /v1/internal/presence`), instead of one
//! heartbeat per guest per 10 s. A plain type (no pingora) and the task that sends.
//!
//! - **Arrive**: [`Presence::arrive`] counts one open request of a token in
//!   its room; the [`Here`] it returns counts it out when dropped.
//! - **Leave**: a token with no open request for [`LEAVE_GRACE`] (a stream
//!   that closed and did not come back, a guest who stopped polling) is
//!   reported in `left`, unless another token of the same member is still
//!   here (a guest who joined again with a fresh token).
//! - **Trust**: the edge does not verify tokens; the API verifies each one
//!   as it would a heartbeat's. The member id read from a token's payload
//!   only groups tokens, and a forged one can at most keep one `left` from
//!   being sent (the member then expires from the list after its ttl).
//! - **Bounds**: entries exist only for tokens of requests open now or
//!   within the grace; a token longer than [`MAX_TOKEN_LEN`] is not kept;
//!   one report carries at most [`MAX_PRESENCE_TOKENS`] tokens in each list.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::time::Instant;

use chatty_shared::wire::{PresenceBatch, MAX_PRESENCE_TOKENS};

use crate::fetch::Fetcher;
use crate::metrics::metrics;
use crate::versions::RoomHash;

/// How long a token with no open request stays present.
pub const LEAVE_GRACE: Duration = Duration::from_secs(5);
/// Longest token kept (the API refuses longer ones anyway).
pub const MAX_TOKEN_LEN: usize = 1024;
/// How often the sender looks for rooms due.
const TICK: Duration = Duration::from_secs(1);
/// PresenceBatchs in flight at once.
const MAX_SENDING: usize = 16;
/// The internal route of the API nodes.
pub const ROUTE: &str = "/v1/internal/presence";

#[derive(Debug)]
struct Guest {
    /// The member id in the token's payload, if it has one.
    member: Option<String>,
    /// Requests of this token open now.
    open: u32,
    /// When the last of them closed.
    since: Instant,
}

#[derive(Debug)]
struct Room {
    site: String,
    room: String,
    guests: HashMap<String, Guest>,
    next_report: Instant,
}

/// Who is here, per room. See the module docs.
#[derive(Debug)]
pub struct Presence {
    rooms: Mutex<HashMap<RoomHash, Room>>,
    every: Duration,
}

/// One open request of a guest; counts it out when dropped.
#[derive(Debug)]
pub struct Here {
    presence: Arc<Presence>,
    key: RoomHash,
    token: String,
}

/// The member id in a guest token's payload (`base64url(json).mac`),
/// unverified.
fn member_of(token: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Payload {
        m: String,
    }
    let payload = B64.decode(token.split_once('.')?.0).ok()?;
    serde_json::from_slice::<Payload>(&payload)
        .ok()
        .map(|p| p.m)
}

/// The token of `Authorization: Bearer …`, if it is one worth keeping.
pub fn bearer(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    let plausible = scheme.eq_ignore_ascii_case("bearer")
        && !token.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && token.bytes().all(|b| b.is_ascii_graphic());
    plausible.then_some(token)
}

impl Presence {
    /// PresenceBatchs each room every `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            rooms: Mutex::default(),
            every,
        }
    }

    /// Counts an open request of `token` in a room.
    pub fn arrive(
        self: &Arc<Self>,
        key: RoomHash,
        (site, room): (&str, &str),
        token: &str,
    ) -> Here {
        let now = Instant::now();
        let mut rooms = self.rooms.lock();
        let entry = rooms.entry(key).or_insert_with(|| Room {
            site: site.to_owned(),
            room: room.to_owned(),
            guests: HashMap::new(),
            // The guest has just joined or heartbeated: report later.
            next_report: now + self.every,
        });
        let guest = entry
            .guests
            .entry(token.to_owned())
            .or_insert_with(|| Guest {
                member: member_of(token),
                open: 0,
                since: now,
            });
        guest.open += 1;
        Here {
            presence: self.clone(),
            key,
            token: token.to_owned(),
        }
    }

    /// The reports due at `now`: rooms whose turn came, or with a guest
    /// past the grace. Tokens reported as left are forgotten, and so are
    /// rooms left empty.
    pub fn due(&self, now: Instant) -> Vec<PresenceBatch> {
        let mut reports = Vec::new();
        self.rooms.lock().retain(|_, room| {
            let gone = |g: &Guest| g.open == 0 && now.duration_since(g.since) >= LEAVE_GRACE;
            let leaving = room.guests.values().any(gone);
            if !leaving && now < room.next_report {
                return true;
            }
            let mut left = Vec::new();
            let mut present = Vec::new();
            for (token, guest) in &room.guests {
                if !gone(guest) {
                    present.push(token.clone());
                    continue;
                }
                let stays = guest.member.is_some()
                    && room
                        .guests
                        .values()
                        .any(|o| !gone(o) && o.member == guest.member);
                if !stays {
                    left.push(token.clone());
                }
            }
            room.guests.retain(|_, g| !gone(g));
            if now >= room.next_report {
                room.next_report = now + self.every;
            } else {
                // Only leaving: the others were reported recently enough.
                present.clear();
            }
            split(room, present, left, &mut reports);
            !room.guests.is_empty()
        });
        reports
    }

    /// Tokens known, open or within the grace.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.rooms.lock().values().map(|r| r.guests.len()).sum()
    }
}

/// `present` and `left` as reports of at most [`MAX_PRESENCE_TOKENS`] tokens each.
fn split(
    room: &Room,
    mut present: Vec<String>,
    mut left: Vec<String>,
    out: &mut Vec<PresenceBatch>,
) {
    while !present.is_empty() || !left.is_empty() {
        let take = |v: &mut Vec<String>| v.split_off(v.len().saturating_sub(MAX_PRESENCE_TOKENS));
        out.push(PresenceBatch {
            site: room.site.clone(),
            room: room.room.clone(),
            present: take(&mut present),
            left: take(&mut left),
        });
    }
}

impl Drop for Here {
    fn drop(&mut self) {
        let mut rooms = self.presence.rooms.lock();
        if let Some(guest) = rooms
            .get_mut(&self.key)
            .and_then(|r| r.guests.get_mut(&self.token))
        {
            guest.open -= 1;
            if guest.open == 0 {
                guest.since = Instant::now();
            }
        }
    }
}

/// Sends the reports due, every [`TICK`], until the edge stops.
pub async fn report(presence: Arc<Presence>, fetcher: Arc<Fetcher>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut sending = tokio::task::JoinSet::new();
        for report in presence.due(Instant::now()) {
            if sending.len() >= MAX_SENDING {
                sending.join_next().await;
            }
            let fetcher = fetcher.clone();
            sending.spawn(async move { send(&fetcher, &report).await });
        }
        while sending.join_next().await.is_some() {}
    }
}

async fn send(fetcher: &Fetcher, report: &PresenceBatch) {
    let body = Bytes::from(serde_json::to_vec(report).expect("strings serialise"));
    let m = metrics();
    match fetcher.post_json(ROUTE, body).await {
        Ok(answer) if answer.status == 200 => m.presence_ok.inc(),
        Ok(answer) => {
            m.presence_failed.inc();
            tracing::warn!(status = answer.status, "presence report refused");
        }
        Err(e) => {
            m.presence_failed.inc();
            tracing::warn!(error = %e, "presence report not sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOBBY: RoomHash = RoomHash(1);
    const REPORT_EVERY: Duration = Duration::from_secs(10);
    const WHERE: (&str, &str) = ("demo", "lobby");

    fn token(member: &str, n: u32) -> String {
        let payload = B64.encode(format!(
            r#"{{"s":"demo","r":"lobby","m":"{member}","n":"x","e":{n}}}"#
        ));
        format!("{payload}.sig")
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer(b"Bearer abc.def"), Some("abc.def"));
        assert_eq!(bearer(b"bearer  abc "), Some("abc"));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bearer a b"), None);
        assert_eq!(bearer("Bearer caf\u{e9}".as_bytes()), None);
        assert!(bearer(format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1)).as_bytes()).is_none());
        assert_eq!(member_of(&token("m1", 1)).as_deref(), Some("m1"));
        assert_eq!(member_of("junk"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_room_is_reported_every_interval_while_its_guests_are_here() {
        let p = Arc::new(Presence::new(REPORT_EVERY));
        let (a, b) = (token("a", 1), token("b", 1));
        let _ha = p.arrive(LOBBY, WHERE, &a);
        let _hb = p.arrive(LOBBY, WHERE, &b);
        let _hb2 = p.arrive(LOBBY, WHERE, &b);
        assert!(p.due(Instant::now()).is_empty(), "just arrived");
        tokio::time::advance(REPORT_EVERY).await;
        let reports = p.due(Instant::now());
        assert_eq!(reports.len(), 1);
        assert_eq!((reports[0].site.as_str(), reports[0].room.as_str()), WHERE);
        assert_eq!(sorted(reports[0].present.clone()), sorted(vec![a, b]));
        assert!(reports[0].left.is_empty());
        assert!(p.due(Instant::now()).is_empty(), "reported");
    }

    #[tokio::test(start_paused = true)]
    async fn a_guest_leaves_after_the_grace_unless_back_or_here_again() {
        let p = Arc::new(Presence::new(REPORT_EVERY));
        let (a, b) = (token("a", 1), token("b", 1));
        let ha = p.arrive(LOBBY, WHERE, &a);
        let hb = p.arrive(LOBBY, WHERE, &b);
        drop(ha);
        drop(hb);
        // `a` comes back within the grace; `b` does not.
        tokio::time::advance(LEAVE_GRACE / 2).await;
        let _ha = p.arrive(LOBBY, WHERE, &a);
        tokio::time::advance(LEAVE_GRACE / 2).await;
        let reports = p.due(Instant::now());
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].left, vec![b]);
        assert!(reports[0].present.is_empty(), "not its turn yet");
        assert_eq!(p.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_token_of_the_same_member_keeps_it_present() {
        let p = Arc::new(Presence::new(REPORT_EVERY));
        let (old, new) = (token("a", 1), token("a", 2));
        let h_old = p.arrive(LOBBY, WHERE, &old);
        let _h_new = p.arrive(LOBBY, WHERE, &new);
        drop(h_old);
        tokio::time::advance(REPORT_EVERY).await;
        let reports = p.due(Instant::now());
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].present, vec![new]);
        assert!(reports[0].left.is_empty(), "the member is still here");
        assert_eq!(p.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn big_rooms_are_split_and_empty_rooms_forgotten() {
        let p = Arc::new(Presence::new(REPORT_EVERY));
        let here: Vec<Here> = (0..MAX_PRESENCE_TOKENS as u32 + 5)
            .map(|n| p.arrive(LOBBY, WHERE, &token(&n.to_string(), n)))
            .collect();
        tokio::time::advance(REPORT_EVERY).await;
        let sizes: Vec<usize> = p
            .due(Instant::now())
            .iter()
            .map(|r| r.present.len())
            .collect();
        assert_eq!(sizes, [MAX_PRESENCE_TOKENS, 5]);
        drop(here);
        tokio::time::advance(LEAVE_GRACE).await;
        let left: usize = p.due(Instant::now()).iter().map(|r| r.left.len()).sum();
        assert_eq!(left, MAX_PRESENCE_TOKENS + 5);
        assert_eq!(p.len(), 0);
        assert!(p.rooms.lock().is_empty());
    }
}
