//! Polls through an edge as an up-to-date widget makes them: learning a
//! room's ETag until the edge answers 304, and waiting a bounded time for the
//! page a send makes new.

use std::time::{Duration, Instant};

use chatty::client::{ApiClient, Poll};
use chatty_shared::wire::MessagesPage;

use crate::chat::{client, Reader};
use crate::procs::Edge;
use crate::wait_for;

/// Polls `room` of `acme` through `base` until a poll with the room's ETag
/// is answered 304; returns that ETag and seq.
pub async fn learn(base: &str, room: &str) -> (String, u64) {
    let c = client(base, "acme");
    wait_for(Duration::from_secs(10), "a 304 from the edge", || {
        let c = c.clone();
        async move {
            let mut r = Reader::new();
            r.poll(&c, room).await.ok()?;
            let mut etag = r.etag.clone();
            match c.poll(room, r.after, &mut etag).await.ok()? {
                Poll::NotModified => Some((etag, r.after)),
                Poll::Page(_) => None,
            }
        }
    })
    .await
}

/// Polls `room` after `seq` with `etag`, every `every`, until a page comes;
/// `Err` with the time since `since` once a 304 comes after `limit` has
/// passed.
pub async fn next_page(
    c: &ApiClient,
    (room, seq, etag): (&str, u64, &str),
    since: Instant,
    limit: Duration,
    every: Duration,
) -> Result<MessagesPage, Duration> {
    loop {
        let mut held = etag.to_owned();
        if let Poll::Page(page) = c.poll(room, seq, &mut held).await.expect("poll") {
            return Ok(page);
        }
        if since.elapsed() >= limit {
            return Err(since.elapsed());
        }
        tokio::time::sleep(every).await;
    }
}

/// The answer to one poll that prefers to wait, and how long it took.
pub struct Held {
    pub status: u16,
    pub etag: Option<String>,
    pub applied: Option<String>,
    pub body: String,
    pub took: Duration,
}

impl Held {
    /// The seqs of the page it brought.
    pub fn seqs(&self) -> Vec<u64> {
        let page: MessagesPage = serde_json::from_str(&self.body).expect("a messages page");
        page.events.iter().map(|e| e.seq).collect()
    }
}

/// A poll of `room` after `seq` with `etag` through `base` that prefers to
/// wait `wait` seconds.
pub async fn held_poll(base: &str, (room, seq, etag): (&str, u64, &str), wait: u64) -> Held {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(40))
        .build()
        .expect("http client");
    let start = Instant::now();
    let resp = http
        .get(format!(
            "{base}/v1/sites/acme/rooms/{room}/messages?after={seq}"
        ))
        .header("if-none-match", etag)
        .header("prefer", format!("wait={wait}"))
        .send()
        .await
        .expect("held poll");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().expect("ascii header").to_owned())
    };
    let (status, etag, applied) = (
        resp.status().as_u16(),
        header("etag"),
        header("preference-applied"),
    );
    let body = resp.text().await.expect("held poll body");
    Held {
        status,
        etag,
        applied,
        body,
        took: start.elapsed(),
    }
}

/// Waits until the edge holds `n` polls.
pub async fn until_held(edge: &Edge, n: f64) {
    wait_for(Duration::from_secs(5), "polls held at the edge", || async {
        (edge.metric("chatty_edge_held_polls").await == n).then_some(())
    })
    .await;
}

/// `n` polls of `hall` after `seq` with `etag`, each preferring to wait
/// `wait` seconds, spawned and counted as held by the edge.
pub async fn hold(
    edge: &Edge,
    room: &str,
    n: usize,
    (seq, etag): (u64, &str),
    wait: u64,
) -> Vec<tokio::task::JoinHandle<Held>> {
    let held = (0..n)
        .map(|_| {
            let (base, room, tag) = (edge.base.clone(), room.to_owned(), etag.to_owned());
            tokio::spawn(async move { held_poll(&base, (&room, seq, &tag), wait).await })
        })
        .collect();
    until_held(edge, n as f64).await;
    held
}
