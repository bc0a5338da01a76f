//! The conformance suite's batches: many rooms in one transaction, retries
//! and duplicates inside a batch, and concurrent batches that name the same
//! rooms in different orders.

use std::collections::BTreeSet;
use std::sync::Arc;

use chatty_shared::RoomKey;
use chatty_shared::RoomVersion;

use super::{message, unique};
use crate::store::{NewMessage, Store};

/// A batch to many rooms, some new, with retries of stored messages and
/// duplicates inside the batch: seqs per room in the batch's order, answers
/// in the batch's order, and exactly what the answers say is stored.
pub(super) async fn batches(store: &dyn Store) {
    assert!(store.append_messages(&[]).await.unwrap().is_empty());
    let site = unique("s");
    let rooms: Vec<RoomKey> = (0..12)
        .map(|i| RoomKey::new(&site, &format!("r{i:02}")).unwrap())
        .collect();
    let old = store
        .append_message(&rooms[3], message("m1", "old", "before"))
        .await
        .unwrap();
    // Forty sends spread over the rooms from the last to the first, each
    // member's client ids counting up; then, inside the batch, a retry of
    // the stored message and duplicates of two of the batch's own.
    let mut batch: Vec<(RoomKey, NewMessage)> = (0..40)
        .map(|i| {
            let key = rooms[rooms.len() - 1 - i % rooms.len()].clone();
            (
                key,
                message(&format!("m{}", i % 3), &format!("c{i}"), &format!("t{i}")),
            )
        })
        .collect();
    batch.insert(5, (rooms[3].clone(), message("m1", "old", "retried")));
    batch.push(batch[0].clone());
    batch.push((
        batch[7].0.clone(),
        message(&batch[7].1.member_id, &batch[7].1.client_id, "dup"),
    ));
    let answers = store.append_messages(&batch).await.unwrap();
    assert_eq!(answers.len(), batch.len());

    let retried = &answers[5];
    assert!(!retried.created);
    assert_eq!(
        retried.event, old.event,
        "a retry returns the stored message"
    );
    let n = batch.len();
    assert!(!answers[n - 2].created && !answers[n - 1].created);
    assert_eq!(
        answers[n - 2].event,
        answers[0].event,
        "a duplicate returns the first"
    );
    assert_eq!(answers[n - 1].event, answers[7].event);
    assert_eq!(answers[n - 1].event.text, batch[7].1.text);

    for key in &rooms {
        let sent: Vec<&crate::store::Appended> = batch
            .iter()
            .zip(&answers)
            .filter(|((k, _), a)| k == key && a.created)
            .map(|(_, a)| a)
            .collect();
        let first = if *key == rooms[3] { 2 } else { 1 };
        let seqs: Vec<u64> = sent.iter().map(|a| a.event.seq).collect();
        let expect: Vec<u64> = (first..first + sent.len() as u64).collect();
        assert_eq!(seqs, expect, "{key}: seqs follow the batch's order");
        let (events, version) = store.events_after(key, 0, 100).await.unwrap();
        assert_eq!(version.seq, first - 1 + sent.len() as u64);
        let stored: Vec<&chatty_shared::wire::Event> =
            events.iter().skip(first as usize - 1).collect();
        assert_eq!(stored, sent.iter().map(|a| &a.event).collect::<Vec<_>>());
        for a in &sent {
            assert_eq!(a.version, RoomVersion::new(version.epoch, a.event.seq));
        }
    }
    let retry_version = store.room_version(&rooms[3]).await.unwrap();
    assert_eq!(
        retried.version, retry_version,
        "a retry answers the room's version after the batch"
    );

    // The same batch again stores nothing and answers the same events.
    let again = store.append_messages(&batch).await.unwrap();
    for (a, b) in again.iter().zip(&answers) {
        assert!(!a.created);
        assert_eq!(a.event, b.event);
    }
    for key in &rooms {
        let (events, _) = store.events_after(key, 0, 100).await.unwrap();
        let per_room = batch.iter().filter(|(k, _)| k == key).count();
        assert!(events.len() <= per_room + 1);
    }
}

/// `tasks` writers each send `per_task` batches into the same three rooms,
/// listed in a different order by each: no deadlock, and every room's seqs
/// are 1..=n with no gap or duplicate.
pub(super) async fn concurrent_batches(store: Arc<dyn Store>, tasks: usize, per_task: usize) {
    let site = unique("s");
    let rooms: Vec<RoomKey> = ["a", "b", "c"]
        .iter()
        .map(|r| RoomKey::new(&site, r).unwrap())
        .collect();
    let mut writers = Vec::new();
    for t in 0..tasks {
        let (store, mut rooms) = (store.clone(), rooms.clone());
        rooms.rotate_left(t % 3);
        if t % 2 == 1 {
            rooms.reverse();
        }
        writers.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..per_task {
                let batch: Vec<(RoomKey, NewMessage)> = rooms
                    .iter()
                    .enumerate()
                    .map(|(j, k)| {
                        (
                            k.clone(),
                            message(&format!("m{t}"), &format!("c{i}-{j}"), "x"),
                        )
                    })
                    .collect();
                let answers = store.append_messages(&batch).await.unwrap();
                for ((k, _), a) in batch.iter().zip(answers) {
                    assert!(a.created);
                    seqs.push((k.clone(), a.event.seq));
                }
            }
            seqs
        }));
    }
    let mut all: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); rooms.len()];
    for w in writers {
        for (k, seq) in w.await.expect("writer task") {
            let i = rooms.iter().position(|r| *r == k).unwrap();
            assert!(all[i].insert(seq), "{k}: duplicate seq {seq}");
        }
    }
    let n = (tasks * per_task) as u64;
    for (key, seqs) in rooms.iter().zip(all) {
        assert_eq!(
            seqs.into_iter().collect::<Vec<_>>(),
            (1..=n).collect::<Vec<_>>()
        );
        assert_eq!(store.room_version(key).await.unwrap().seq, n);
    }
}
