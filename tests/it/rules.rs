//! A site's own rules on two API nodes sharing one database and one Redis:
//! whatever the site's owner changes through one node (rules, a room's slow
//! mode, limits) is in force on the other at once — by the word on the bus,
//! well before the nodes' site cache would have expired — and slow mode
//! counts one member's messages across nodes.

use std::time::{Duration, Instant};

use chatty_tests::chat::Guest;
use chatty_tests::stack::{Stack, RATES_OFF};
use serde_json::{json, Value};

/// How long a node may keep a site's settings without the bus (the API's
/// `SITE_MAX_AGE`); a change must be seen well within it.
const SITE_MAX_AGE: Duration = Duration::from_secs(3);

/// A send of `text` by the holder of `token` in `acme/hall` on `base`: the
/// status and the body.
async fn send(base: &str, token: &str, text: &str) -> (u16, Value, Option<String>) {
    let res = chatty_tests::http()
        .post(format!("{base}/v1/sites/acme/rooms/hall/messages"))
        .bearer_auth(token)
        .json(&json!({"text": text, "client_id": format!("c-{}", rand::random::<u64>())}))
        .send()
        .await
        .expect("send");
    let status = res.status().as_u16();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, res.json().await.expect("JSON body"), retry)
}

/// `PUT {path}` on `base` with the site's secret.
async fn put(base: &str, secret: &str, path: &str, body: Value) {
    let res = chatty_tests::http()
        .put(format!("{base}{path}"))
        .bearer_auth(secret)
        .json(&body)
        .send()
        .await
        .expect("put");
    assert_eq!(res.status(), 200, "PUT {path}: {:?}", res.text().await);
}

/// Sends on `base` until the answer's status is `status`, for at most a
/// third of the cache's max age (a node that waited for its cache to
/// expire would not make it); answers the last body and `Retry-After`.
async fn until_status(base: &str, token: &str, text: &str, status: u16) -> (Value, Option<String>) {
    let deadline = Instant::now() + SITE_MAX_AGE / 3;
    loop {
        let (got, body, retry) = send(base, token, text).await;
        if got == status {
            return (body, retry);
        }
        assert!(
            Instant::now() < deadline,
            "still {got} {body} rather than {status}: the change did not reach this node"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_node_is_in_force_on_the_other_at_once() {
    let stack = Stack::start(2, RATES_OFF, &[]).await;
    let (a, b) = (stack.apis[0].base.as_str(), stack.apis[1].base.as_str());
    let ann = Guest::join(b, "acme", "hall", "Ann").await;
    let token = ann.joined.token.as_str();

    // B reads and caches the site's (empty) rules …
    let (status, body, _) = send(b, token, "darn it").await;
    assert_eq!((status, &body["text"]), (201, &json!("darn it")));
    // … A changes them, and B refuses at once.
    put(
        a,
        &stack.secret,
        "/v1/sites/acme/rules",
        json!({"blocked_words": ["darn"], "action": "refuse"}),
    )
    .await;
    let (refused, _) = until_status(b, token, "darn it", 422).await;
    assert_eq!(refused["error"]["code"], "blocked_text");

    put(
        a,
        &stack.secret,
        "/v1/sites/acme/rules",
        json!({"blocked_words": ["darn"], "action": "mask", "links": "deny"}),
    )
    .await;
    let (masked, _) = until_status(b, token, "darn it", 201).await;
    assert_eq!(masked["text"], "**** it");
    let (status, body, _) = send(b, token, "see example.com").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("links_not_allowed"))
    );

    // The longest message (the site's limits) likewise.
    let res = chatty_tests::http()
        .put(format!("{a}/v1/sites/acme/limits"))
        .bearer_auth(&stack.secret)
        .json(&json!({"max_text_bytes": 8, "guest_messages": 0, "guest_window_secs": 0}))
        .send()
        .await
        .expect("limits");
    assert_eq!(res.status(), 200);
    let (too_long, _) = until_status(b, token, "twelve bytes", 413).await;
    assert_eq!(too_long["error"]["code"], "too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_mode_counts_a_members_messages_on_every_node() {
    let stack = Stack::start(2, RATES_OFF, &[]).await;
    let (a, b) = (stack.apis[0].base.as_str(), stack.apis[1].base.as_str());
    let ann = Guest::join(a, "acme", "hall", "Ann").await;
    let token = ann.joined.token.as_str();
    // B caches the room's slow mode (none) with a send.
    assert_eq!(send(b, token, "one").await.0, 201);
    put(
        a,
        &stack.secret,
        "/v1/sites/acme/rooms/hall/slow-mode",
        json!({"secs": 60}),
    )
    .await;
    // The first message under slow mode goes through on A, which made
    // the change …
    assert_eq!(send(a, token, "two").await.0, 201);
    // … and the next is refused on B, with the time left.
    let (body, retry) = until_status(b, token, "three", 429).await;
    assert_eq!(body["error"]["code"], "slow_mode");
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(send(a, token, "four").await.0, 429);
    // Back to the site's (off): in force on both at once.
    put(
        b,
        &stack.secret,
        "/v1/sites/acme/rooms/hall/slow-mode",
        json!({"secs": null}),
    )
    .await;
    until_status(a, token, "five", 201).await;
    until_status(a, token, "six", 201).await;
}
