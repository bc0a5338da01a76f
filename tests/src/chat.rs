//! Test-side conveniences over the `chatty` API client: a site created
//! through the admin API, guests, and a reader that follows a room.

use std::time::Duration;

use chatty::client::{ApiClient, ClientOptions, Poll};
use chatty_shared::wire::{Event, JoinResponse};

use crate::procs::ADMIN_TOKEN;

/// A client for `site` at `base`, with a short timeout.
pub fn client(base: &str, site: &str) -> ApiClient {
    let mut opts = ClientOptions::new(base, site);
    opts.timeout = Duration::from_secs(5);
    ApiClient::new(&opts).expect("api client")
}

/// Creates a site through the operator's admin API of `base`, allowing
/// `http://localhost` on any port; returns the site's admin secret.
pub async fn create_site(base: &str, site: &str) -> String {
    let resp = crate::http()
        .post(format!("{base}/v1/admin/sites"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"id": site, "origins": ["http://localhost"]}))
        .send()
        .await
        .expect("create site");
    assert_eq!(
        resp.status(),
        201,
        "create site {site}: {:?}",
        resp.text().await
    );
    let body: serde_json::Value = resp.json().await.expect("created site body");
    body["secret"].as_str().expect("secret").to_owned()
}

/// A guest who joined a room.
pub struct Guest {
    pub client: ApiClient,
    pub room: String,
    pub joined: JoinResponse,
}

impl Guest {
    pub async fn join(base: &str, site: &str, room: &str, nick: &str) -> Guest {
        let client = client(base, site);
        let joined = client.join(room, nick).await.expect("join");
        Guest {
            client,
            room: room.to_owned(),
            joined,
        }
    }

    pub async fn send(&self, text: &str, client_id: &str) -> Event {
        self.client
            .send(&self.room, &self.joined.token, text, client_id)
            .await
            .unwrap_or_else(|e| panic!("send {text:?}: {e}"))
    }

    /// Sends `text` and reads the room from the start through `reader`:
    /// `Some` once the message is there, `None` on any failure (for
    /// waiting until a cluster has recovered).
    pub async fn round_trip(&self, reader: &ApiClient, text: &str, client_id: &str) -> Option<()> {
        let sent = self
            .client
            .send(&self.room, &self.joined.token, text, client_id)
            .await
            .ok()?;
        let mut r = Reader::new();
        r.poll(reader, &self.room).await.ok()?;
        r.events.iter().any(|e| e.seq == sent.seq).then_some(())
    }
}

/// Follows a room from seq 0, the way the widget does, and keeps every event.
pub struct Reader {
    pub after: u64,
    /// The last messages ETag the server gave (empty before the first).
    pub etag: String,
    pub events: Vec<Event>,
}

impl Default for Reader {
    fn default() -> Self {
        Self::new()
    }
}

impl Reader {
    pub fn new() -> Reader {
        Reader {
            after: 0,
            etag: String::new(),
            events: Vec::new(),
        }
    }

    /// One poll (following `more` pages); true when something new came.
    pub async fn poll(
        &mut self,
        client: &ApiClient,
        room: &str,
    ) -> Result<bool, chatty::client::ClientError> {
        let mut got = false;
        loop {
            match client.poll(room, self.after, &mut self.etag).await? {
                Poll::NotModified => return Ok(got),
                Poll::Page(page) => {
                    got |= !page.events.is_empty();
                    self.events.extend(page.events);
                    self.after = page.seq;
                    if !page.more {
                        return Ok(got);
                    }
                }
            }
        }
    }

    /// Asserts that seqs run 1, 2, 3 … with no gap and no repeat.
    pub fn assert_gapless(&self) {
        for (i, e) in self.events.iter().enumerate() {
            assert_eq!(
                e.seq,
                i as u64 + 1,
                "event {i} has seq {} (gap or repeat)",
                e.seq
            );
        }
    }
}
