//! The JSON bodies of the HTTP API (v1), shared by the API, the CLI and the
//! tests. Field names are part of the contract documented in docs/api.md and
//! /v1/openapi.json.

use serde::{Deserialize, Serialize};

/// Body of `POST …/join`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The guest's nickname; ignored with a `user_token`, whose name is
    /// used instead.
    #[serde(default)]
    pub nick: String,
    /// A user token signed by the host site's backend: the member joins as
    /// that verified user (member id [`VERIFIED_MEMBER_PREFIX`] + its id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_token: Option<String>,
}

/// The start of the member id of a user verified by the host site. Guest
/// ids never contain `_`, so no guest can hold one, and a nickname cannot
/// imitate the mark a client draws for it.
pub const VERIFIED_MEMBER_PREFIX: &str = "u_";

/// A guest present in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    pub nick: String,
}

/// What an event in a room's log is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A message a guest sent.
    Message,
    /// A moderator deleted the message with seq `deletes`.
    Deletion,
    /// A moderator acted on a member or on the room: `member_id` is the
    /// member acted on (empty for `slow_mode`), `nick` the moderator's
    /// name (empty for the site's owner), `text` the action in a fixed
    /// machine form ([`ModerationAction::event_text`]).
    Moderation,
}

/// One event of a room's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub kind: EventKind,
    /// For a message: the sender. For a deletion: empty. For a
    /// moderation: the member acted on.
    pub member_id: String,
    pub nick: String,
    /// For a message: its text. For a deletion: empty.
    pub text: String,
    /// For a message: the sender's idempotency key.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub client_id: Option<String>,
    /// For a deletion: the seq of the deleted message.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub deletes: Option<u64>,
    /// Milliseconds since the Unix epoch, as stored.
    pub at_ms: i64,
}

/// Answer of `POST …/join`: the initial sync.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinResponse {
    /// Signed guest token, sent back as `Authorization: Bearer …`.
    pub token: String,
    pub member: Member,
    /// The most recent events, oldest first (messages already deleted are
    /// left out, and so are deletions).
    pub messages: Vec<Event>,
    /// The first [`MAX_LISTED_MEMBERS`] members, as in a [`MembersList`].
    pub members: Vec<Member>,
    /// How many members the room has.
    #[serde(default)]
    pub members_count: u64,
    /// Seq of the room's last event: poll with `?after=` this.
    pub seq: u64,
    /// The messages ETag matching `seq`.
    pub etag: String,
    /// Whether the member may moderate the room (a verified user whose
    /// token carries the moderator role).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub moderator: bool,
    /// The members ETag matching `members`.
    pub members_etag: String,
    /// Seconds before the token expires; join again before then.
    pub token_ttl_secs: u64,
}

/// Answer of `GET …/messages?after=`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessagesPage {
    /// Events with seq greater than `after`, in seq order.
    pub events: Vec<Event>,
    /// Seq of the last event returned, or `after` when none is.
    pub seq: u64,
    /// True when more events follow: ask again with `after=seq`.
    pub more: bool,
}

/// Most members a list names; `count` says how many there are. A room of
/// a live event may hold tens of thousands of guests: the list every
/// guest is sent on each change stays small, whatever the room's size.
pub const MAX_LISTED_MEMBERS: usize = 100;

/// Answer of `GET …/members`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersList {
    /// The first [`MAX_LISTED_MEMBERS`] members, ordered by nick then id.
    pub members: Vec<Member>,
    /// How many members the room has.
    #[serde(default)]
    pub count: u64,
}

impl MembersList {
    /// The list of a room whose members are `all`, in order.
    pub fn capped(mut all: Vec<Member>) -> Self {
        let count = all.len() as u64;
        all.truncate(MAX_LISTED_MEMBERS);
        Self {
            members: all,
            count,
        }
    }
}

/// Body of `POST …/messages`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    pub text: String,
    pub client_id: String,
}

/// Longest timeout a moderator may give: seven days.
pub const MAX_TIMEOUT_SECS: u32 = 7 * 24 * 3600;

/// Body of `POST /v1/sites/{site}/rooms/{room}/moderation` (a moderator's
/// guest token or the site's secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModerationRequest {
    /// The member may not send (nor join, nor stay present) for `secs`
    /// seconds (1 to [`MAX_TIMEOUT_SECS`]).
    Timeout { member_id: String, secs: u32 },
    /// The member is banned from the whole site.
    Ban { member_id: String },
    /// The member's messages among the room's last 100 events are deleted.
    Clear { member_id: String },
    /// The room's own slow mode: one message per member per `secs`; 0 is
    /// off in this room.
    SlowMode { secs: u32 },
}

/// Answer of `POST …/moderation`: the moderation event appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModerationResponse {
    pub event: Event,
}

/// What a moderator did, as the audit names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModerationAction {
    /// A message deleted (`DELETE …/messages/{seq}`).
    Delete,
    Timeout,
    Ban,
    Clear,
    SlowMode,
}

impl ModerationAction {
    /// The action's name in the audit and in moderation events.
    pub fn name(self) -> &'static str {
        match self {
            ModerationAction::Delete => "delete",
            ModerationAction::Timeout => "timeout",
            ModerationAction::Ban => "ban",
            ModerationAction::Clear => "clear",
            ModerationAction::SlowMode => "slow_mode",
        }
    }

    /// The `text` of a moderation event: `timeout:<secs>`, `ban`, `clear`,
    /// `slow_mode:<secs>` (and `delete`, never appended: a deletion is its
    /// own event).
    pub fn event_text(self, secs: Option<u32>) -> String {
        match (self, secs) {
            (ModerationAction::Timeout | ModerationAction::SlowMode, Some(secs)) => {
                format!("{}:{secs}", self.name())
            }
            _ => self.name().to_owned(),
        }
    }
}

/// One line of a site's audit (`GET /v1/sites/{site}/audit`, site secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub room: String,
    /// The moderator's member id; empty when the site's secret acted.
    pub moderator_id: String,
    /// The moderator's name; empty when the site's secret acted.
    pub moderator_nick: String,
    pub action: ModerationAction,
    /// The member acted on (the author of a deleted message); absent for
    /// `slow_mode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,
    /// The seconds of a `timeout` or `slow_mode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secs: Option<u32>,
    /// The seq of the event the action appended (the deletion, for
    /// `delete`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// A site's limits, set by its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteLimits {
    /// Longest message text in bytes.
    pub max_text_bytes: u32,
    /// Messages per guest per `guest_window_secs`, 0 for no limit.
    pub guest_messages: u32,
    pub guest_window_secs: u32,
}

/// A site as its owner and the operator see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteInfo {
    pub id: String,
    pub origins: Vec<String>,
    pub limits: SiteLimits,
}

/// Body of `POST /v1/admin/sites` (operator token).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSiteRequest {
    /// Omit for a generated id.
    #[serde(default)]
    pub id: Option<String>,
    pub origins: Vec<String>,
}

/// Answer of `POST /v1/admin/sites`: the only time the secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedSite {
    pub site: SiteInfo,
    /// The site owner's admin secret (`Authorization: Bearer …` on the site
    /// admin endpoints).
    pub secret: String,
}

/// Body of `POST /v1/sites/{site}/user-keys` (site secret): a key that
/// verifies the user tokens the site's backend signs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddUserKeyRequest {
    /// The key's id, named by the `kid` of the tokens it signs.
    pub kid: String,
    /// `ed25519` (the public key) or `hmac-sha256` (the shared secret).
    pub alg: String,
    /// The key in base64url.
    pub key: String,
}

/// A registered user-token key as its site sees it (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserKeyInfo {
    pub kid: String,
    pub alg: String,
}

/// Body of `POST /v1/sites/{site}/erase` (site secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EraseRequest {
    pub member_id: String,
}

/// Answer of `POST /v1/sites/{site}/erase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasedCount {
    /// Messages whose text is gone.
    pub messages: u64,
    /// Rooms where a deletion went into the log.
    pub rooms: u64,
}

/// Body of `POST …/bans` (site secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BanRequest {
    pub member_id: String,
}

/// What a site does with a message holding a blocked word or pattern.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockAction {
    /// Stored with each match replaced by `*`, one per character.
    #[default]
    Mask,
    /// Refused (`422 blocked_text`); nothing is stored.
    Refuse,
}

/// Whether guests may send links.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkPolicy {
    #[default]
    Allow,
    /// A guest's message with a link is refused (`422 links_not_allowed`).
    Deny,
}

/// A site's rules for what is said in its rooms (`GET`/`PUT
/// /v1/sites/{site}/rules`, site secret). The longest message is a
/// [`SiteLimits`] field, not a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteRules {
    /// Words and phrases matched case-insensitively on word boundaries.
    #[serde(default)]
    pub blocked_words: Vec<String>,
    /// Regular expressions (`regex` crate syntax), case-insensitive
    /// unless they say `(?-i)`.
    #[serde(default)]
    pub blocked_patterns: Vec<String>,
    #[serde(default)]
    pub action: BlockAction,
    #[serde(default)]
    pub links: LinkPolicy,
    /// One message per member per this many seconds in each room; 0 is off.
    #[serde(default)]
    pub slow_mode_secs: u32,
    /// Whether guests (visitors the site has not signed in) may write.
    #[serde(default)]
    pub guests: GuestAccess,
}

/// What guests may do on a site. Reading a room needs no token either
/// way: the log of a room is public to whoever has its address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestAccess {
    /// Join under a nickname and write.
    #[default]
    Write,
    /// Read only: only the site's signed-in users join and write.
    Read,
}

/// Body and answer of `PUT /v1/sites/{site}/rooms/{room}/slow-mode` (site
/// secret): the room's own slow mode, or `null` (or absent) for the
/// site's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomSlowMode {
    #[serde(default)]
    pub secs: Option<u32>,
}

/// Most tokens in each list of a [`PresenceBatch`]; the edge splits a
/// bigger room into several batches, and the API refuses a longer list
/// (413 `too_large`).
pub const MAX_PRESENCE_TOKENS: usize = 1000;

/// Body of `POST /v1/internal/presence`, sent by the edge for one room:
/// the guest tokens of its open streams and held polls (`present`) and of
/// those closed past the grace (`left`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceBatch {
    pub site: String,
    pub room: String,
    #[serde(default)]
    pub present: Vec<String>,
    #[serde(default)]
    pub left: Vec<String>,
}

/// Answer of `POST /v1/internal/presence`: every token of the batch is
/// counted once, in one of the three.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceCounts {
    /// `present` tokens verified and not banned: their guest is listed.
    pub present: u64,
    /// `left` tokens verified: their guest is no longer listed (unless a
    /// `present` token of the same guest kept them).
    pub left: u64,
    /// Tokens forged, expired, of another room, or (in `present`) of a
    /// banned guest.
    pub refused: u64,
}

/// The error body of every 4xx and 5xx answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: &str, message: &str) -> Self {
        Self {
            error: ErrorDetail {
                code: code.to_owned(),
                message: message.to_owned(),
            },
        }
    }
}

/// The bytes of the error body `{"error":{"code":…,"message":…}}`.
pub fn error_body(code: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&ErrorBody::new(code, message)).expect("strings serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_members_list_names_at_most_the_cap_and_counts_everyone() {
        let member = |n: usize| Member {
            id: format!("m{n}"),
            nick: format!("n{n:04}"),
        };
        let big = MembersList::capped((0..MAX_LISTED_MEMBERS + 7).map(member).collect());
        assert_eq!(big.count, MAX_LISTED_MEMBERS as u64 + 7);
        assert_eq!(big.members.len(), MAX_LISTED_MEMBERS);
        assert_eq!(big.members[0], member(0), "the first ones, in order");
        let small = MembersList::capped(vec![member(1)]);
        assert_eq!((small.count, small.members.len()), (1, 1));
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_body("unavailable", "no \"healthy\" node"),
            br#"{"error":{"code":"unavailable","message":"no \"healthy\" node"}}"#
        );
        let back: ErrorBody = serde_json::from_slice(&error_body("a", "b")).unwrap();
        assert_eq!(
            (back.error.code.as_str(), back.error.message.as_str()),
            ("a", "b")
        );
    }

    #[test]
    fn moderation_bodies() {
        let t: ModerationRequest =
            serde_json::from_str(r#"{"action":"timeout","member_id":"m1","secs":60}"#).unwrap();
        assert_eq!(
            t,
            ModerationRequest::Timeout {
                member_id: "m1".into(),
                secs: 60
            }
        );
        let s: ModerationRequest =
            serde_json::from_str(r#"{"action":"slow_mode","secs":0}"#).unwrap();
        assert_eq!(s, ModerationRequest::SlowMode { secs: 0 });
        for bad in [
            r#"{"action":"timeout","member_id":"m1"}"#,
            r#"{"action":"ban","member_id":"m1","x":1}"#,
            r#"{"action":"kick","member_id":"m1"}"#,
            r#"{"member_id":"m1"}"#,
        ] {
            assert!(
                serde_json::from_str::<ModerationRequest>(bad).is_err(),
                "{bad}"
            );
        }
        assert_eq!(ModerationAction::Timeout.event_text(Some(30)), "timeout:30");
        assert_eq!(
            ModerationAction::SlowMode.event_text(Some(0)),
            "slow_mode:0"
        );
        assert_eq!(ModerationAction::Ban.event_text(None), "ban");
        let kind = serde_json::to_string(&EventKind::Moderation).unwrap();
        assert_eq!(kind, r#""moderation""#);
        let entry = AuditEntry {
            at_ms: 1,
            room: "lobby".into(),
            moderator_id: String::new(),
            moderator_nick: String::new(),
            action: ModerationAction::SlowMode,
            member_id: None,
            secs: Some(5),
            seq: Some(3),
        };
        assert_eq!(
            serde_json::to_string(&entry).unwrap(),
            r#"{"at_ms":1,"room":"lobby","moderator_id":"","moderator_nick":"","action":"slow_mode","secs":5,"seq":3}"#
        );
    }

    #[test]
    fn presence_batches() {
        let full: PresenceBatch =
            serde_json::from_str(r#"{"site":"a","room":"b","present":["t1"],"left":["t2"]}"#)
                .unwrap();
        assert_eq!((full.present.len(), full.left.len()), (1, 1));
        let lists_optional: PresenceBatch =
            serde_json::from_str(r#"{"site":"a","room":"b"}"#).unwrap();
        assert!(lists_optional.present.is_empty() && lists_optional.left.is_empty());
        assert!(serde_json::from_str::<PresenceBatch>(r#"{"site":"a","room":"b","x":1}"#).is_err());
        let counts = PresenceCounts {
            present: 2,
            left: 1,
            refused: 0,
        };
        assert_eq!(
            serde_json::to_string(&counts).unwrap(),
            r#"{"present":2,"left":1,"refused":0}"#
        );
    }
}
