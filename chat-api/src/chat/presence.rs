//! The edge's presence batches (`POST /v1/internal/presence`): for one room,
//! the guests holding a stream or a held poll, refreshed as their
//! heartbeats would be, and the guests gone, removed as their leaves would
//! be — with at most one members bump per batch instead of one per guest.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use chatty_shared::wire::{Member, PresenceBatch, PresenceCounts, MAX_PRESENCE_TOKENS};
use chatty_shared::RoomKey;
use futures::stream::{self, StreamExt};

use super::{presence_down, Chat};
use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::token::{now_secs, Claims};

/// Guests of a batch checked and refreshed at once. A batch asks the store
/// and presence what the heartbeats it replaces would have asked, one guest
/// at a time; a few at once keep a thousand round trips from adding up to
/// seconds.
const CONCURRENCY: usize = 16;

/// A guest named by one or more tokens of a list.
struct Guest {
    /// The claims of the token that expires last: the guest's latest nick.
    claims: Claims,
    /// How many tokens of the list named this guest.
    tokens: u64,
}

/// What refreshing one present guest did.
enum Refreshed {
    /// Banned from the site: left alone, its tokens refused.
    Banned,
    /// Listed; `moved_to` is the new members version when the guest was
    /// absent or renamed.
    Listed { moved_to: Option<u64> },
}

/// What a batch changed in the room's members list.
#[derive(Debug, Default)]
struct Moved {
    joins: u64,
    leaves: u64,
    /// The newest members version a change reached.
    version: Option<u64>,
}

/// A batch as it goes: its counts, its changes and its first failure.
#[derive(Debug, Default)]
struct Tally {
    counts: PresenceCounts,
    moved: Moved,
    failure: Option<ApiError>,
}

impl Moved {
    fn to(&mut self, version: u64) {
        self.version = Some(self.version.map_or(version, |v| v.max(version)));
    }
}

/// Refuses a list longer than [`MAX_PRESENCE_TOKENS`].
fn check_lengths(batch: &PresenceBatch) -> Result<(), ApiError> {
    for (name, list) in [("present", &batch.present), ("left", &batch.left)] {
        if list.len() > MAX_PRESENCE_TOKENS {
            return Err(ApiError::TooLarge(format!(
                "{name} must hold at most {MAX_PRESENCE_TOKENS} tokens"
            )));
        }
    }
    Ok(())
}

impl Chat {
    /// `POST /v1/internal/presence`: every token verified as a heartbeat's
    /// is (signature, expiry, this room); the present guests not banned
    /// refreshed for the presence ttl, the left ones removed, unless a
    /// present token of the same guest keeps them. When presence or the
    /// store fails, what already moved is still published, and the batch
    /// answers 503 as a heartbeat would.
    pub(crate) async fn presence_batch(
        &self,
        batch: &PresenceBatch,
    ) -> Result<PresenceCounts, ApiError> {
        check_lengths(batch)?;
        let (key, _site) = self.room(&batch.site, &batch.room).await?;
        let now = now_secs();
        let mut tally = Tally::default();
        let present = self.guests(&key, &batch.present, now, &mut tally.counts.refused);
        let mut left = self.guests(&key, &batch.left, now, &mut tally.counts.refused);
        // A guest both present and gone (one tab closed, another open) stays.
        left.retain(|id, guest| {
            let stays = present.contains_key(id);
            if stays {
                tally.counts.left += guest.tokens;
            }
            !stays
        });
        let failed = AtomicBool::new(false);
        self.refresh_all(&key, present, &failed, &mut tally).await;
        self.remove_all(&key, left, &failed, &mut tally).await;
        self.members_moved_by_batch(&key, &tally.moved).await;
        if let Some(e) = tally.failure {
            return Err(e);
        }
        let counts = tally.counts;
        for (outcome, n) in [
            ("present", counts.present),
            ("left", counts.left),
            ("refused", counts.refused),
        ] {
            METRICS
                .presence_batch_tokens
                .with_label_values(&[outcome])
                .inc_by(n);
        }
        Ok(counts)
    }

    /// Refreshes the present guests, [`CONCURRENCY`] at a time.
    async fn refresh_all(
        &self,
        key: &RoomKey,
        guests: HashMap<String, Guest>,
        failed: &AtomicBool,
        tally: &mut Tally,
    ) {
        let mut done = stream::iter(guests.into_values())
            .map(|guest| async move {
                let res = self.refresh(key, guest.claims, failed).await;
                (guest.tokens, res)
            })
            .buffer_unordered(CONCURRENCY);
        while let Some((tokens, res)) = done.next().await {
            match res {
                Ok(Refreshed::Banned) => tally.counts.refused += tokens,
                Ok(Refreshed::Listed { moved_to }) => {
                    tally.counts.present += tokens;
                    if let Some(v) = moved_to {
                        tally.moved.joins += 1;
                        tally.moved.to(v);
                    }
                }
                Err(e) => {
                    tally.failure.get_or_insert(e);
                }
            }
        }
    }

    /// Removes the guests gone, [`CONCURRENCY`] at a time.
    async fn remove_all(
        &self,
        key: &RoomKey,
        guests: HashMap<String, Guest>,
        failed: &AtomicBool,
        tally: &mut Tally,
    ) {
        let mut done = stream::iter(guests.into_values())
            .map(|guest| async move {
                let res = self.remove(key, &guest.claims, failed).await;
                (guest.tokens, res)
            })
            .buffer_unordered(CONCURRENCY);
        while let Some((tokens, res)) = done.next().await {
            match res {
                Ok(moved_to) => {
                    tally.counts.left += tokens;
                    if let Some(v) = moved_to {
                        tally.moved.leaves += 1;
                        tally.moved.to(v);
                    }
                }
                Err(e) => {
                    tally.failure.get_or_insert(e);
                }
            }
        }
    }

    /// The guests a list of tokens names, by member id; a token that does
    /// not verify for this room is counted in `refused`.
    fn guests(
        &self,
        key: &RoomKey,
        tokens: &[String],
        now: u64,
        refused: &mut u64,
    ) -> HashMap<String, Guest> {
        let mut guests: HashMap<String, Guest> = HashMap::new();
        for token in tokens {
            let Ok(claims) = self.keys.verify(token, key, now) else {
                *refused += 1;
                continue;
            };
            match guests.get_mut(&claims.member_id) {
                Some(guest) => {
                    guest.tokens += 1;
                    if claims.exp > guest.claims.exp {
                        guest.claims = claims;
                    }
                }
                None => {
                    let id = claims.member_id.clone();
                    guests.insert(id, Guest { claims, tokens: 1 });
                }
            }
        }
        guests
    }

    /// A present guest, as a heartbeat: refused when banned, else
    /// refreshed. Once a call of the batch has `failed`, the others do
    /// nothing and fail too.
    async fn refresh(
        &self,
        key: &RoomKey,
        claims: Claims,
        failed: &AtomicBool,
    ) -> Result<Refreshed, ApiError> {
        if failed.load(Ordering::Relaxed) {
            return Err(ApiError::Unavailable);
        }
        let res = async {
            if self.is_banned(key.site(), &claims.member_id).await? {
                return Ok(Refreshed::Banned);
            }
            let member = Member {
                id: claims.member_id,
                nick: claims.nick,
            };
            let moved_to = self
                .presence
                .heartbeat(key, &member, self.settings.presence_ttl)
                .await
                .map_err(presence_down)?;
            Ok(Refreshed::Listed { moved_to })
        }
        .await;
        if res.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
        res
    }

    /// A guest gone, as a leave: the new members version if they were
    /// listed. Like [`refresh`](Self::refresh) after a failure.
    async fn remove(
        &self,
        key: &RoomKey,
        claims: &Claims,
        failed: &AtomicBool,
    ) -> Result<Option<u64>, ApiError> {
        if failed.load(Ordering::Relaxed) {
            return Err(ApiError::Unavailable);
        }
        let res = self
            .presence
            .leave(key, &claims.member_id)
            .await
            .map_err(presence_down);
        if res.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
        res
    }

    /// Counts a batch's changes by kind and publishes the newest members
    /// version once, whatever the number of guests that moved.
    async fn members_moved_by_batch(&self, key: &RoomKey, moved: &Moved) {
        let changes = &METRICS.presence_changes;
        changes.with_label_values(&["join"]).inc_by(moved.joins);
        changes.with_label_values(&["leave"]).inc_by(moved.leaves);
        if let Some(version) = moved.version {
            self.publish_members(key, version).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(present: usize, left: usize) -> PresenceBatch {
        PresenceBatch {
            site: "demo".into(),
            room: "lobby".into(),
            present: vec!["t".into(); present],
            left: vec!["t".into(); left],
        }
    }

    #[test]
    fn lists_are_bounded() {
        let max = MAX_PRESENCE_TOKENS;
        let cases = [
            ((0, 0), None),
            ((max, max), None),
            ((max + 1, 0), Some("too_large")),
            ((0, max + 1), Some("too_large")),
        ];
        for ((present, left), expect) in cases {
            let got = check_lengths(&batch(present, left)).err();
            assert_eq!(got.as_ref().map(ApiError::code), expect, "{present} {left}");
        }
    }

    #[test]
    fn the_newest_version_is_kept() {
        let mut moved = Moved::default();
        for v in [5, 9, 7] {
            moved.to(v);
        }
        assert_eq!(moved.version, Some(9));
    }
}
