//! A batch of messages planned once for both stores: which messages are
//! new and the seqs they get, which are retries (of a stored message, or of
//! an earlier message of the same batch), each room's last seq afterwards,
//! and the answers in the batch's order. The stores only read what the plan
//! needs (the locked rooms, the stored messages the batch names) and write
//! what it says.

use std::collections::{BTreeMap, HashMap};

use chatty_shared::wire::Event;
use chatty_shared::RoomKey;
use chatty_shared::RoomVersion;

use super::rows::message_event;
use super::{Appended, NewMessage, StoreError};

/// Most messages one batch may hold (the multi-row statements stay well
/// within MySQL's placeholder and packet limits).
pub const MAX_BATCH: usize = 1024;

/// What makes a message one: its room, its member and its client id.
pub(super) type Identity = (RoomKey, String, String);

/// The identity of `msg` in `key`.
pub(super) fn identity(key: &RoomKey, msg: &NewMessage) -> Identity {
    (key.clone(), msg.member_id.clone(), msg.client_id.clone())
}

/// A locked room's row: its epoch and last seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RoomRow {
    pub(super) epoch: u32,
    pub(super) seq: u64,
}

/// What a batch writes and answers.
#[derive(Debug)]
pub(super) struct Plan {
    /// The new events, each with its room; per room in seq order.
    pub(super) inserts: Vec<(RoomKey, Event)>,
    /// Each room that moved, with its last seq after the batch.
    pub(super) moved: Vec<(RoomKey, u64)>,
    /// One answer per message, in the batch's order.
    pub(super) answers: Vec<Appended>,
}

/// The rooms of a batch, each once, in primary-key order `(site, room)`:
/// the order rows are locked in, so that two writers never wait on each
/// other in a cycle.
pub(super) fn rooms_of(batch: &[(RoomKey, NewMessage)]) -> Vec<RoomKey> {
    let mut rooms: Vec<RoomKey> = batch.iter().map(|(k, _)| k.clone()).collect();
    rooms.sort_unstable_by(|a, b| (a.site(), a.room()).cmp(&(b.site(), b.room())));
    rooms.dedup();
    rooms
}

/// Refuses a batch larger than [`MAX_BATCH`].
pub(super) fn check_size(batch: &[(RoomKey, NewMessage)]) -> Result<(), StoreError> {
    if batch.len() > MAX_BATCH {
        return Err(StoreError::Server(format!(
            "a batch of {} messages (at most {MAX_BATCH})",
            batch.len()
        )));
    }
    Ok(())
}

enum Answer {
    Written(Event),
    Existing(Event),
}

/// Plans `batch` given its rooms' locked rows (every room of the batch must
/// be there) and the stored messages it names, by identity. A message
/// whose identity is stored, or came earlier in the batch, is answered
/// with that message and `created == false`; the others get the next seqs
/// of their rooms in the batch's order.
pub(super) fn plan(
    batch: &[(RoomKey, NewMessage)],
    rooms: &BTreeMap<RoomKey, RoomRow>,
    stored: &HashMap<Identity, Event>,
) -> Result<Plan, StoreError> {
    let mut last: BTreeMap<&RoomKey, u64> = BTreeMap::new();
    let mut fresh: HashMap<Identity, usize> = HashMap::new();
    let mut inserts: Vec<(RoomKey, Event)> = Vec::new();
    let mut pending = Vec::with_capacity(batch.len());
    for (key, msg) in batch {
        let row = rooms
            .get(key)
            .ok_or_else(|| StoreError::Server(format!("room {key} was not locked")))?;
        let id = identity(key, msg);
        if let Some(event) = stored.get(&id) {
            pending.push(Answer::Existing(event.clone()));
        } else if let Some(&i) = fresh.get(&id) {
            pending.push(Answer::Existing(inserts[i].1.clone()));
        } else {
            let seq = last.entry(key).or_insert(row.seq);
            *seq += 1;
            let event = message_event(*seq, msg);
            fresh.insert(id, inserts.len());
            inserts.push((key.clone(), event.clone()));
            pending.push(Answer::Written(event));
        }
    }
    let version = |key: &RoomKey, row: &RoomRow| {
        let seq = last.get(key).copied().unwrap_or(row.seq);
        if seq == 0 {
            RoomVersion::default()
        } else {
            RoomVersion::new(row.epoch, seq)
        }
    };
    let mut answers = Vec::with_capacity(batch.len());
    for ((key, _), answer) in batch.iter().zip(pending) {
        let row = &rooms[key];
        answers.push(match answer {
            Answer::Written(event) => Appended::written(event, row.epoch),
            Answer::Existing(event) => Appended::existing(event, version(key, row)),
        });
    }
    let moved = last.iter().map(|(k, seq)| ((*k).clone(), *seq)).collect();
    Ok(Plan {
        inserts,
        moved,
        answers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::message;

    fn key(site: &str, room: &str) -> RoomKey {
        RoomKey::new(site, room).unwrap()
    }

    /// Plans `sends` (room name, member, client id) into rooms `a` (at seq
    /// 3) and `b` (new), with `m1`/`old` stored in `a` as seq 2; returns
    /// each answer as (room, seq, created, version seq).
    fn check(sends: &[(&str, &str, &str)], expect: &[(&str, u64, bool, u64)]) {
        let rooms: BTreeMap<RoomKey, RoomRow> = [
            (key("s", "a"), RoomRow { epoch: 7, seq: 3 }),
            (key("s", "b"), RoomRow { epoch: 9, seq: 0 }),
        ]
        .into();
        let old = message_event(2, &message("m1", "old", "stored"));
        let stored: HashMap<Identity, Event> =
            [((key("s", "a"), "m1".into(), "old".into()), old)].into();
        let batch: Vec<(RoomKey, NewMessage)> = sends
            .iter()
            .map(|(room, member, client)| (key("s", room), message(member, client, "x")))
            .collect();
        let plan = plan(&batch, &rooms, &stored).unwrap();
        let got: Vec<(&str, u64, bool, u64)> = batch
            .iter()
            .zip(&plan.answers)
            .map(|((k, _), a)| (k.room(), a.event.seq, a.created, a.version.seq))
            .collect();
        assert_eq!(got, expect, "{sends:?}");
        for (k, seq) in &plan.moved {
            let top = plan
                .inserts
                .iter()
                .filter(|(ik, _)| ik == k)
                .map(|(_, e)| e.seq)
                .max();
            assert_eq!(top, Some(*seq), "a moved room ends at its last insert");
        }
    }

    #[test]
    fn plans_seqs_retries_and_duplicates() {
        check(&[("a", "m1", "c1")], &[("a", 4, true, 4)]);
        check(&[("a", "m1", "old")], &[("a", 2, false, 3)]);
        check(
            &[("a", "m1", "c1"), ("b", "m1", "c1"), ("a", "m2", "c1")],
            &[("a", 4, true, 4), ("b", 1, true, 1), ("a", 5, true, 5)],
        );
        check(
            &[("a", "m1", "c1"), ("a", "m1", "c1"), ("a", "m1", "c2")],
            &[("a", 4, true, 4), ("a", 4, false, 5), ("a", 5, true, 5)],
        );
        check(
            &[("b", "m1", "old"), ("a", "m1", "old")],
            &[("b", 1, true, 1), ("a", 2, false, 3)],
        );
    }

    #[test]
    fn an_unlocked_room_is_refused() {
        let batch = [(key("s", "c"), message("m1", "c1", "x"))];
        assert!(plan(&batch, &BTreeMap::new(), &HashMap::new()).is_err());
    }

    #[test]
    fn rooms_are_in_key_order_once() {
        let batch: Vec<(RoomKey, NewMessage)> = [("b", "x"), ("a-b", "x"), ("a", "z"), ("b", "x")]
            .iter()
            .map(|(s, r)| (key(s, r), message("m", "c", "x")))
            .collect();
        let rooms: Vec<String> = rooms_of(&batch).iter().map(|k| k.to_string()).collect();
        assert_eq!(rooms, ["a/z", "a-b/x", "b/x"]);
        let big = vec![(key("s", "a"), message("m", "c", "x")); MAX_BATCH + 1];
        assert!(check_size(&big).is_err());
        assert!(check_size(&big[..MAX_BATCH]).is_ok());
    }
}
