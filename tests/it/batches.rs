//! Group commit: each chat-api node stores its sends in batches. Two nodes
//! on one MariaDB database writing into one room with many sends in flight
//! keep the room's log gapless and in order; a retry sent while its
//! original's batch is in flight (on its node or the other, one batch at a
//! time or several) gets the original; MariaDB cut in the
//! middle of batches refuses sends with 503 and acknowledges only what is
//! stored.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chatty_shared::wire::Event;
use chatty_tests::chat::{client, create_site, Guest, Reader};
use chatty_tests::fault::{FaultProxy, Mode};
use chatty_tests::procs::{metric, ApiNode, ApiOpts};
use chatty_tests::services::{redis_prefix, FreshDb, REDIS_URL};
use chatty_tests::stack::{node_opts, RATES_OFF};
use chatty_tests::{bounded, http};
use tokio::time::Instant;

const ROOM: &str = "hall";

/// Two nodes on `db` (reached at `mysql_url`) and one Redis prefix, rates
/// off, with the extra flags `extra`.
async fn two_nodes(db: &FreshDb, mysql_url: &str, extra: &[&str]) -> [ApiNode; 2] {
    let prefix = redis_prefix().await;
    let flags: Vec<&str> = RATES_OFF.iter().chain(extra).copied().collect();
    let opts = ApiOpts {
        mysql_url: Some(mysql_url.to_owned()),
        ..node_opts(db, REDIS_URL, &prefix, &flags)
    };
    let a = ApiNode::start(opts.clone()).await;
    let b = ApiNode::start(opts).await;
    [a, b]
}

/// A send's answer: its status and, for 200 and 201, the stored event.
async fn send(guest: &Guest, base: &str, text: &str, client_id: &str) -> (u16, Option<Event>) {
    let resp = http()
        .post(format!(
            "{base}/v1/sites/acme/rooms/{}/messages",
            guest.room
        ))
        .bearer_auth(&guest.joined.token)
        .json(&serde_json::json!({"text": text, "client_id": client_id}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("send {client_id}: {e}"));
    let status = resp.status().as_u16();
    let event = match status {
        200 | 201 => Some(resp.json().await.expect("the stored event")),
        _ => None,
    };
    (status, event)
}

/// Every event of the room, read through `base` from seq 0.
async fn log(base: &str) -> Vec<Event> {
    let c = client(base, "acme");
    let mut reader = Reader::new();
    bounded(Duration::from_secs(30), "reading the room's log", async {
        while reader.poll(&c, ROOM).await.expect("poll") {}
    })
    .await;
    reader.assert_gapless();
    reader.events
}

/// Sends stored per batch over both nodes: (batches, sends).
async fn batch_totals(nodes: &[ApiNode]) -> (f64, f64) {
    let mut totals = (0.0, 0.0);
    for n in nodes {
        let url = format!("{}/metrics", n.base);
        totals.0 += metric(&url, "chatty_api_send_batch_size_count").await;
        totals.1 += metric(&url, "chatty_api_send_batch_size_sum").await;
    }
    totals
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sends_from_two_nodes_share_batches_and_keep_the_log_gapless() {
    const GUESTS_PER_NODE: usize = 20;
    const PER_GUEST: usize = 10;
    let db = FreshDb::create().await;
    let nodes = two_nodes(&db, &db.url, &[]).await;
    create_site(&nodes[0].base, "acme").await;
    let total = 2 * GUESTS_PER_NODE * PER_GUEST;

    // 2 × 200 sends, 40 in flight at a time, half through each node.
    let mut senders = Vec::new();
    for g in 0..2 * GUESTS_PER_NODE {
        let base = nodes[g % 2].base.clone();
        senders.push(tokio::spawn(async move {
            let guest = Guest::join(&base, "acme", ROOM, &format!("g{g}")).await;
            let mut sent = Vec::new();
            for n in 0..PER_GUEST {
                let text = format!("g{g} n{n}");
                let (status, event) = send(&guest, &base, &text, &format!("g{g}-{n}")).await;
                assert_eq!(status, 201, "{text}");
                let event = event.expect("event");
                assert_eq!(event.text, text);
                sent.push(event);
            }
            sent
        }));
    }
    // A reader on each node follows the room while it is written.
    let mut readers = Vec::new();
    for node in &nodes {
        let base = node.base.clone();
        readers.push(tokio::spawn(async move {
            let c = client(&base, "acme");
            let mut reader = Reader::new();
            let deadline = Instant::now() + Duration::from_secs(90);
            while reader.events.len() < total {
                assert!(
                    Instant::now() < deadline,
                    "reader stalled at {}",
                    reader.events.len()
                );
                if !reader.poll(&c, ROOM).await.expect("poll") {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            reader
        }));
    }
    let mut acknowledged = BTreeMap::new();
    for s in senders {
        let sent = bounded(Duration::from_secs(90), "senders", s)
            .await
            .expect("sender");
        assert!(
            sent.windows(2).all(|p| p[0].seq < p[1].seq),
            "one guest's messages are in its order"
        );
        for e in sent {
            assert!(
                acknowledged.insert(e.seq, e.text).is_none(),
                "seq given twice"
            );
        }
    }
    assert_eq!(acknowledged.len(), total);
    for r in readers {
        let reader = r.await.expect("reader");
        reader.assert_gapless();
        let seen: BTreeMap<u64, String> =
            reader.events.into_iter().map(|e| (e.seq, e.text)).collect();
        assert_eq!(
            seen, acknowledged,
            "every reader sees every message once, in seq order"
        );
    }
    let (batches, sends) = batch_totals(&nodes).await;
    assert_eq!(
        sends, total as f64,
        "every send stored in exactly one batch"
    );
    assert!(
        batches < sends,
        "some batch held more than one send ({batches} batches for {sends} sends)"
    );
    println!("BATCHES {{\"sends\": {sends}, \"batches\": {batches}}}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_while_the_original_is_in_flight_gets_the_original() {
    const PAIRS: usize = 20;
    let db = FreshDb::create().await;
    // Batches side by side too: a pair may land in two of one node's.
    let nodes = two_nodes(&db, &db.url, &["--send-batches-in-flight", "3"]).await;
    create_site(&nodes[0].base, "acme").await;
    let bases = [nodes[0].base.clone(), nodes[1].base.clone()];

    // Background sends through both nodes keep batches in flight.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for g in 0..8 {
        let (base, stop) = (bases[g % 2].clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let guest = Guest::join(&base, "acme", ROOM, &format!("load{g}")).await;
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) && n < 2000 {
                let (status, _) = send(&guest, &base, "load", &format!("l{g}-{n}")).await;
                assert_eq!(status, 201);
                n += 1;
            }
        }));
    }
    let guest = Guest::join(&bases[0], "acme", ROOM, "retrier").await;
    let mut seqs = HashSet::new();
    for i in 0..PAIRS {
        // The same send twice at once: through one node (the same batch or
        // the next), or through both (two nodes' batches on one room).
        let (first, second) = (&bases[0], &bases[i % 2]);
        let id = format!("r{i}");
        let text = format!("retried {i}");
        let (a, b) = tokio::join!(
            send(&guest, first, &text, &id),
            send(&guest, second, &text, &id)
        );
        let mut statuses = [a.0, b.0];
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [200, 201],
            "{id}: one stored, one answered as a retry"
        );
        let (a, b) = (a.1.expect("event"), b.1.expect("event"));
        assert_eq!(a, b, "{id}: the retry returns the original");
        assert!(seqs.insert(a.seq));
    }
    stop.store(true, Ordering::SeqCst);
    for l in load {
        l.await.expect("load");
    }
    let logged = log(&bases[1]).await;
    let retried: Vec<&Event> = logged
        .iter()
        .filter(|e| e.text.starts_with("retried"))
        .collect();
    assert_eq!(retried.len(), PAIRS, "each retried send stored once");
    assert!(retried.iter().all(|e| seqs.contains(&e.seq)));
    let (batches, sends) = batch_totals(&nodes).await;
    println!("BATCHES {{\"sends\": {sends}, \"batches\": {batches}}}");
}

/// What a sender was told.
#[derive(Debug, Clone)]
struct Outcome {
    node: usize,
    client_id: String,
    text: String,
    /// The seq of a `201`; `None` for a `503`.
    stored: Option<u64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_cut_mid_batch_refuses_with_503_and_acknowledges_only_what_is_stored() {
    const GUESTS_PER_NODE: usize = 8;
    let _heavy = chatty_tests::heavy().await;
    let db = FreshDb::create().await;
    let link = FaultProxy::start(3306).await;
    let nodes = two_nodes(&db, &db.url_via(link.port), &["--store-timeout", "1s"]).await;
    create_site(&nodes[0].base, "acme").await;
    let bases = [nodes[0].base.clone(), nodes[1].base.clone()];

    let mut guests = Vec::new();
    for g in 0..2 * GUESTS_PER_NODE {
        guests.push(Arc::new(
            Guest::join(&bases[g % 2], "acme", ROOM, &format!("g{g}")).await,
        ));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for (g, guest) in guests.iter().enumerate() {
        let (guest, base, stop) = (guest.clone(), bases[g % 2].clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) && n < 5000 {
                let (client_id, text) = (format!("g{g}-{n}"), format!("g{g} n{n}"));
                let (status, event) = send(&guest, &base, &text, &client_id).await;
                let stored = match status {
                    201 => Some(event.expect("event").seq),
                    503 => None,
                    other => panic!("{client_id}: status {other}, not 201 or 503"),
                };
                outcomes.push(Outcome {
                    node: g % 2,
                    client_id,
                    text,
                    stored,
                });
                n += 1;
                if stored.is_none() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            outcomes
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    link.set(Mode::Cut).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    link.set(Mode::Pass).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut outcomes = Vec::new();
    let mut recovered = 0;
    for s in senders {
        let mine = bounded(Duration::from_secs(30), "senders", s)
            .await
            .expect("sender");
        // In the sender's order: stored again after its first refusal.
        if let Some(i) = mine.iter().position(|o| o.stored.is_none()) {
            recovered += usize::from(mine[i..].iter().any(|o| o.stored.is_some()));
        }
        outcomes.extend(mine);
    }
    let acknowledged = outcomes.iter().filter(|o| o.stored.is_some()).count();
    let refused: Vec<&Outcome> = outcomes.iter().filter(|o| o.stored.is_none()).collect();
    assert!(!refused.is_empty(), "the cut refused sends");
    assert!(recovered > 0, "sends are stored again after the cut");

    // Every 201 is in the log at its seq; every logged message was sent.
    let logged = log(&bases[1]).await;
    let by_client: HashMap<&str, &Event> = logged
        .iter()
        .map(|e| (e.client_id.as_deref().expect("a message"), e))
        .collect();
    assert_eq!(by_client.len(), logged.len(), "each client id stored once");
    let sent: HashMap<&str, &Outcome> =
        outcomes.iter().map(|o| (o.client_id.as_str(), o)).collect();
    for o in &outcomes {
        if let Some(seq) = o.stored {
            let e = by_client
                .get(o.client_id.as_str())
                .unwrap_or_else(|| panic!("{}: acknowledged 201 but not in the log", o.client_id));
            assert_eq!((e.seq, e.text.as_str()), (seq, o.text.as_str()));
        }
    }
    for e in &logged {
        assert!(sent.contains_key(e.client_id.as_deref().unwrap_or_default()));
    }

    // A refused send is stored only if its batch's commit was in flight when
    // the link was cut (the server committed, the answer never came back):
    // at most one batch per node, a run of consecutive seqs.
    let mut in_doubt: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    for o in &refused {
        if let Some(e) = by_client.get(o.client_id.as_str()) {
            in_doubt[o.node].push(e.seq);
        }
    }
    for seqs in &mut in_doubt {
        seqs.sort_unstable();
        if let (Some(first), Some(last)) = (seqs.first(), seqs.last()) {
            assert_eq!(
                (last - first + 1) as usize,
                seqs.len(),
                "refused yet stored sends are one batch: {seqs:?}"
            );
        }
    }

    // The guest's retry with the same client id settles each refused send:
    // the original if it was stored after all, else it is stored now.
    let mut settled = 0;
    for o in &refused {
        let g: usize = o.client_id[1..].split('-').next().unwrap().parse().unwrap();
        let (status, event) = send(&guests[g], &bases[o.node], &o.text, &o.client_id).await;
        let event = event.unwrap_or_else(|| panic!("{}: retry answered {status}", o.client_id));
        match by_client.get(o.client_id.as_str()) {
            Some(stored) => {
                assert_eq!(status, 200, "{}: stored before, a retry", o.client_id);
                assert_eq!(event, **stored);
            }
            None => {
                assert_eq!(status, 201, "{}: not stored before", o.client_id);
                settled += 1;
            }
        }
    }
    let after = log(&bases[0]).await;
    assert_eq!(after.len(), logged.len() + settled);
    println!(
        "BATCH-FAULT {{\"acknowledged\": {acknowledged}, \"refused\": {}, \"refused_yet_stored\": {}}}",
        refused.len(),
        in_doubt[0].len() + in_doubt[1].len()
    );
}
