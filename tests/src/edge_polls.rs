//! Polls through an edge as an up-to-date widget makes them: learning a
//! room's ETag until the edge answers 304, and waiting a bounded time for the
//! page a send makes new.

use std::time::{Duration, Instant};

use chatty::client::{ApiClient, Poll};
use chatty_shared::wire::MessagesPage;

use crate::chat::{client, Reader};
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
