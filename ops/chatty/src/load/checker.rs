//! The delivery checker: per room, every reader must see seqs strictly
//! increasing with no gap, no (sender, n) message may be stored twice, and
//! every acknowledged message must reach every other guest who was in the
//! room when it was sent. Also measures delivery latency (201 → seen).
//!
//! Memory stays bounded by the number of messages sent, never their texts:
//! a room keeps the seq, sender and ack time of each acknowledged message; a
//! reader keeps its cursor and the (rare) gaps it saw.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chatty_shared::wire::{Event, EventKind};
use tokio::time::Instant;

/// The text of check message `n` of `guest` in the run tagged `run`.
pub fn message_text(guest: u32, n: u32, run: &str) -> String {
    format!("chk {guest}:{n} {run}")
}

/// Parses a text made by [`message_text`] for this `run`: `(guest, n)`.
pub fn parse_text(text: &str, run: &str) -> Option<(u32, u32)> {
    let rest = text.strip_prefix("chk ")?;
    let (ids, tag) = rest.split_once(' ')?;
    if tag != run {
        return None;
    }
    let (g, n) = ids.split_once(':')?;
    Some((g.parse().ok()?, n.parse().ok()?))
}

/// Counts of everything that went wrong.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Anomalies {
    /// Seqs a reader skipped over (a gap in what it was shown).
    pub missing: u64,
    /// Messages stored more than once (the same sender and number under two
    /// seqs).
    pub duplicated: u64,
    /// Events shown to a reader at or below a seq it had already seen.
    pub out_of_order: u64,
    /// (acknowledged message, other guest of the room) pairs where the guest
    /// never saw the message.
    pub lost_acknowledged: u64,
}

impl Anomalies {
    pub fn total(&self) -> u64 {
        self.missing + self.duplicated + self.out_of_order + self.lost_acknowledged
    }
}

/// Most anomaly descriptions kept for printing.
const MAX_NOTES: usize = 20;

/// One reader's view of one room.
#[derive(Debug, Clone)]
pub struct Reader {
    pub guest: u32,
    /// The room's seq when this reader joined: it expects every event after.
    pub start_seq: u64,
    /// The highest seq it has seen.
    pub last_seq: u64,
    /// Seq ranges `[from, to]` it skipped.
    gaps: Vec<(u64, u64)>,
}

impl Reader {
    pub fn new(guest: u32, start_seq: u64) -> Self {
        Self {
            guest,
            start_seq,
            last_seq: start_seq,
            gaps: Vec::new(),
        }
    }

    /// True when this reader has seen `seq` (or skipped it: false).
    pub fn has_seen(&self, seq: u64) -> bool {
        seq > self.start_seq
            && seq <= self.last_seq
            && !self.gaps.iter().any(|(a, b)| (*a..=*b).contains(&seq))
    }
}

#[derive(Debug, Clone, Copy)]
struct Ack {
    at: Instant,
    sender: u32,
}

/// What a room's readers and senders have reported, and what went wrong.
#[derive(Debug)]
pub struct RoomLog {
    run: String,
    /// Acknowledged messages by seq.
    acked: HashMap<u64, Ack>,
    /// Where each (sender, n) was first seen stored.
    origin: HashMap<(u32, u32), u64>,
    /// Seqs already counted as duplicates.
    dup_seqs: HashSet<u64>,
    /// Deliveries seen before the sender had its 201, by seq: each becomes a
    /// zero delivery latency once acknowledged.
    early: HashMap<u64, u32>,
    pub anomalies: Anomalies,
    pub notes: Vec<String>,
}

impl RoomLog {
    pub fn new(run: &str) -> Self {
        Self {
            run: run.to_owned(),
            acked: HashMap::new(),
            origin: HashMap::new(),
            dup_seqs: HashSet::new(),
            early: HashMap::new(),
            anomalies: Anomalies::default(),
            notes: Vec::new(),
        }
    }

    fn note(&mut self, f: impl FnOnce() -> String) {
        if self.notes.len() < MAX_NOTES {
            self.notes.push(f());
        }
    }

    fn stored(&mut self, sender: u32, n: u32, seq: u64) {
        match self.origin.get(&(sender, n)) {
            None => {
                self.origin.insert((sender, n), seq);
            }
            Some(&first) if first != seq => {
                if self.dup_seqs.insert(seq) {
                    self.anomalies.duplicated += 1;
                    self.note(|| {
                        format!("message {sender}:{n} stored twice, as seq {first} and {seq}")
                    });
                }
            }
            Some(_) => {}
        }
    }

    /// The sender of message `n` had its 201 for `seq` at `at`. Calls
    /// `delivery` with a zero latency for each reader that saw it earlier.
    pub fn acknowledge(
        &mut self,
        sender: u32,
        n: u32,
        seq: u64,
        at: Instant,
        mut delivery: impl FnMut(Duration),
    ) {
        self.stored(sender, n, seq);
        self.acked.insert(seq, Ack { at, sender });
        if let Some(k) = self.early.remove(&seq) {
            for _ in 0..k {
                delivery(Duration::ZERO);
            }
        }
    }

    /// `reader` was shown `events` at `now`. Checks their order and calls
    /// `delivery` with the latency of each message another guest sent and
    /// had acknowledged.
    pub fn observe(
        &mut self,
        reader: &mut Reader,
        events: &[Event],
        now: Instant,
        mut delivery: impl FnMut(Duration),
    ) {
        for ev in events {
            let message = match ev.kind {
                EventKind::Message => parse_text(&ev.text, &self.run),
                _ => None,
            };
            self.observe_one(reader, ev.seq, message, now, &mut delivery);
        }
    }

    /// `reader` was shown the event `seq` at `now`: a check message
    /// `(sender, n)` of this run, or `None` for anything else (a deletion,
    /// another run's message). The rules of [`RoomLog::observe`], for
    /// readers whose events are not the API's (nchan's subscribers).
    pub fn observe_one(
        &mut self,
        reader: &mut Reader,
        seq: u64,
        message: Option<(u32, u32)>,
        now: Instant,
        delivery: &mut impl FnMut(Duration),
    ) {
        if seq <= reader.last_seq {
            self.anomalies.out_of_order += 1;
            let (g, last) = (reader.guest, reader.last_seq);
            self.note(|| format!("guest {g} was shown seq {seq} after seq {last}"));
            return;
        }
        if seq > reader.last_seq + 1 {
            let (from, to) = (reader.last_seq + 1, seq - 1);
            self.anomalies.missing += to - from + 1;
            reader.gaps.push((from, to));
            let g = reader.guest;
            self.note(|| format!("guest {g} skipped seqs {from}..={to}"));
        }
        reader.last_seq = seq;
        let Some((sender, n)) = message else {
            return;
        };
        self.stored(sender, n, seq);
        if sender == reader.guest {
            return;
        }
        match self.acked.get(&seq) {
            Some(ack) => delivery(now.saturating_duration_since(ack.at)),
            None => *self.early.entry(seq).or_insert(0) += 1,
        }
    }

    /// After the run: counts (acknowledged message, reader) pairs where a
    /// reader other than the sender, in the room since before the message,
    /// never saw it.
    pub fn finish(&mut self, readers: &[Reader]) {
        let mut acked: Vec<(u64, u32)> = self.acked.iter().map(|(s, a)| (*s, a.sender)).collect();
        acked.sort_unstable();
        for (seq, sender) in acked {
            for r in readers {
                if r.guest != sender && r.start_seq < seq && !r.has_seen(seq) {
                    self.anomalies.lost_acknowledged += 1;
                    let g = r.guest;
                    let last = r.last_seq;
                    self.note(|| {
                        format!("acknowledged seq {seq} (from guest {sender}) never reached guest {g} (saw up to {last})")
                    });
                }
            }
        }
    }

    /// How many messages were acknowledged in this room.
    pub fn acknowledged(&self) -> usize {
        self.acked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "t1";

    fn msg(seq: u64, sender: u32, n: u32) -> Event {
        Event {
            seq,
            kind: EventKind::Message,
            member_id: format!("m{sender}"),
            nick: format!("g{sender}"),
            text: message_text(sender, n, RUN),
            client_id: None,
            deletes: None,
            at_ms: 0,
        }
    }

    fn deletion(seq: u64, of: u64) -> Event {
        Event {
            seq,
            kind: EventKind::Deletion,
            member_id: String::new(),
            nick: String::new(),
            text: String::new(),
            client_id: None,
            deletes: Some(of),
            at_ms: 0,
        }
    }

    fn no_delivery(_: Duration) {}

    #[test]
    fn texts_round_trip() {
        assert_eq!(parse_text(&message_text(12, 3, RUN), RUN), Some((12, 3)));
        assert_eq!(parse_text(&message_text(12, 3, "other"), RUN), None);
        assert_eq!(parse_text("hello", RUN), None);
        assert_eq!(parse_text("chk x:1 t1", RUN), None);
    }

    #[test]
    fn clean_stream_has_no_anomaly() {
        let now = Instant::now();
        let mut log = RoomLog::new(RUN);
        let mut r = Reader::new(1, 0);
        log.acknowledge(2, 1, 1, now, no_delivery);
        log.acknowledge(2, 2, 2, now, no_delivery);
        log.observe(
            &mut r,
            &[msg(1, 2, 1), msg(2, 2, 2), deletion(3, 1)],
            now,
            no_delivery,
        );
        log.finish(&[r.clone()]);
        assert_eq!(log.anomalies, Anomalies::default());
        assert_eq!(r.last_seq, 3);
    }

    #[test]
    fn moderation_events_are_seqs_not_messages() {
        let now = Instant::now();
        let mut log = RoomLog::new(RUN);
        let mut r = Reader::new(1, 0);
        log.acknowledge(2, 1, 1, now, no_delivery);
        // Whatever its text, a moderation event is never a check message:
        // not a duplicate of message (2, 1), not one to deliver.
        let moderation = Event {
            kind: EventKind::Moderation,
            nick: "Mo".into(),
            ..msg(2, 2, 1)
        };
        let mut delivered = 0;
        log.observe(
            &mut r,
            &[msg(1, 2, 1), moderation, deletion(3, 1)],
            now,
            |_| delivered += 1,
        );
        log.finish(&[r.clone()]);
        assert_eq!(log.anomalies, Anomalies::default());
        assert_eq!((r.last_seq, delivered, log.acknowledged()), (3, 1, 1));
    }

    #[test]
    fn detects_a_gap() {
        let now = Instant::now();
        let mut log = RoomLog::new(RUN);
        let mut r = Reader::new(1, 4);
        log.observe(&mut r, &[msg(5, 2, 1), msg(8, 2, 4)], now, no_delivery);
        assert_eq!(log.anomalies.missing, 2);
        assert!(!r.has_seen(6) && !r.has_seen(7));
        assert!(r.has_seen(5) && r.has_seen(8));
        assert!(!r.has_seen(4), "before the join");
        assert_eq!(log.notes.len(), 1);
    }

    #[test]
    fn detects_reorder_and_repeats() {
        let now = Instant::now();
        let mut log = RoomLog::new(RUN);
        let mut r = Reader::new(1, 0);
        log.observe(
            &mut r,
            &[msg(1, 2, 1), msg(3, 2, 3), msg(2, 2, 2)],
            now,
            no_delivery,
        );
        assert_eq!(log.anomalies.missing, 1, "2 was skipped when 3 came");
        assert_eq!(log.anomalies.out_of_order, 1, "2 came after 3");
        // The same page shown again counts as out of order, not duplicated.
        log.observe(&mut r, &[msg(3, 2, 3)], now, no_delivery);
        assert_eq!(log.anomalies.out_of_order, 2);
        assert_eq!(log.anomalies.duplicated, 0);
    }

    #[test]
    fn detects_a_message_stored_twice() {
        let now = Instant::now();
        let mut log = RoomLog::new(RUN);
        let mut a = Reader::new(1, 0);
        let mut b = Reader::new(3, 0);
        log.acknowledge(2, 7, 1, now, no_delivery);
        let page = [msg(1, 2, 7), msg(2, 2, 7)];
        log.observe(&mut a, &page, now, no_delivery);
        log.observe(&mut b, &page, now, no_delivery);
        assert_eq!(log.anomalies.duplicated, 1, "counted once, not per reader");
        assert_eq!(log.anomalies.missing + log.anomalies.out_of_order, 0);
    }

    #[test]
    fn detects_lost_acknowledged_messages() {
        let now = Instant::now();
        let mut log = RoomLog::new(RUN);
        // Reader 1 joined at 0 and saw 1 only; reader 3 joined after seq 2;
        // guest 2 sent both and is not expected to count as a receiver.
        let mut r1 = Reader::new(1, 0);
        let r3 = Reader::new(3, 2);
        let r2 = Reader::new(2, 0);
        log.acknowledge(2, 1, 1, now, no_delivery);
        log.acknowledge(2, 2, 2, now, no_delivery);
        log.observe(&mut r1, &[msg(1, 2, 1)], now, no_delivery);
        log.finish(&[r1, r2, r3]);
        assert_eq!(log.anomalies.lost_acknowledged, 1);
        assert_eq!(log.anomalies.total(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn delivery_latency_from_the_201() {
        let t0 = Instant::now();
        let mut log = RoomLog::new(RUN);
        let mut seen = Vec::new();
        let mut r1 = Reader::new(1, 0);
        let mut r2 = Reader::new(2, 0);
        log.acknowledge(2, 1, 1, t0, |d| seen.push(d));
        tokio::time::advance(Duration::from_millis(300)).await;
        let now = Instant::now();
        log.observe(&mut r1, &[msg(1, 2, 1)], now, |d| seen.push(d));
        // The sender seeing its own message is not a delivery.
        log.observe(&mut r2, &[msg(1, 2, 1)], now, |d| seen.push(d));
        assert_eq!(seen, vec![Duration::from_millis(300)]);
        // Seen before the 201 came back: zero, recorded at the 201.
        seen.clear();
        log.observe(&mut r1, &[msg(2, 2, 2)], now, |d| seen.push(d));
        assert!(seen.is_empty());
        log.acknowledge(2, 2, 2, now, |d| seen.push(d));
        assert_eq!(seen, vec![Duration::ZERO]);
    }
}
