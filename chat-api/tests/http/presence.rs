//! The edge's presence batches, `POST /v1/internal/presence`: guests
//! refreshed and removed by their tokens, refused tokens counted, one
//! members bump per batch, and the bodies refused.

use chatty_shared::{BusEvent, BusMessage};
use tokio::sync::mpsc::Receiver;

use super::*;

const BATCH: &str = "/v1/internal/presence";

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A guest token as a join of `site`/`room` would give `id`, expiring at
/// `exp`, signed with `keys`.
fn signed(keys: &TokenKeys, site: &str, room: &str, id: &str, exp: u64) -> String {
    keys.sign(&Claims {
        site: site.into(),
        room: room.into(),
        member_id: id.into(),
        nick: format!("nick-{id}"),
        exp,
        moderator: false,
    })
}

/// A valid token of the demo room `room` for the guest `id`.
fn token(node: &Node, room: &str, id: &str) -> String {
    signed(&node.keys(), "demo", room, id, now_secs() + 3600)
}

/// `POST /v1/internal/presence` of `site`/`room`: the status and the body.
async fn batch(
    node: &Node,
    site: &str,
    room: &str,
    present: &[String],
    left: &[String],
) -> (StatusCode, Value) {
    let body = json!({"site": site, "room": room, "present": present, "left": left});
    let res = node.post_json(BATCH, None, &body).await;
    (res.status(), res.json().await.unwrap())
}

/// The member ids of a demo room and its members version.
async fn members(node: &Node, room: &str) -> (Vec<String>, u64) {
    let res = node
        .get(&format!("/v1/sites/demo/rooms/{room}/members"))
        .await;
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    let version = etag
        .trim_matches('"')
        .trim_start_matches('m')
        .parse()
        .unwrap();
    let body: Value = res.json().await.unwrap();
    let mut ids: Vec<String> = body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    (ids, version)
}

/// The members versions `bus` heard for the demo room `room` until a
/// fence: a join of the room `fence`, published after everything before it.
async fn bumps(node: &Node, bus: &mut Receiver<BusEvent>, room: &str, fence: &str) -> Vec<u64> {
    node.join(fence, "fence").await;
    let mut heard = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), bus.recv())
            .await
            .expect("the fence is heard")
            .expect("the bus is open");
        if let BusEvent::Message(BusMessage::Members { key, version }) = event {
            match key.room() {
                r if r == fence => return heard,
                r if r == room => heard.push(version),
                _ => {}
            }
        }
    }
}

fn counts(present: u64, left: u64, refused: u64) -> Value {
    json!({"present": present, "left": left, "refused": refused})
}

#[tokio::test]
async fn guests_are_refreshed_and_removed_with_one_bump_per_batch() {
    let node = Node::start(|_| {}).await;
    let mut bus = node.bus.subscribe();
    let [a, b, c] = ["a", "b", "c"].map(|id| token(&node, "stream", id));

    // Three guests appear: one bump, the version the members list shows.
    let three = [a.clone(), b.clone(), c.clone()];
    let (status, body) = batch(&node, "demo", "stream", &three, &[]).await;
    assert_eq!((status, body), (StatusCode::OK, counts(3, 0, 0)));
    let (ids, version) = members(&node, "stream").await;
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(bumps(&node, &mut bus, "stream", "fence1").await, [version]);

    // Two leave, one stays: one bump again.
    let (status, body) = batch(&node, "demo", "stream", std::slice::from_ref(&a), &[b, c]).await;
    assert_eq!((status, body), (StatusCode::OK, counts(1, 2, 0)));
    let (ids, after) = members(&node, "stream").await;
    assert_eq!(ids, ["a"]);
    assert!(after > version);
    assert_eq!(bumps(&node, &mut bus, "stream", "fence2").await, [after]);

    // Nothing changes: no bump. A guest both present and left (another
    // tab closed) stays, counted as left.
    let twice = [a.clone(), a.clone()];
    let (status, body) = batch(&node, "demo", "stream", &twice, &[a]).await;
    assert_eq!((status, body), (StatusCode::OK, counts(2, 1, 0)));
    assert_eq!(
        members(&node, "stream").await,
        (vec!["a".to_owned()], after)
    );
    assert!(bumps(&node, &mut bus, "stream", "fence3").await.is_empty());
    node.stop().await;
}

#[tokio::test]
async fn tokens_that_would_fail_a_heartbeat_are_refused_and_counted() {
    let node = Node::start(|_| {}).await;
    let secret = node.create_site("club", "https://club.example").await;
    let ban = node
        .client
        .post(node.url("/v1/sites/club/bans"))
        .bearer_auth(&secret)
        .json(&json!({"member_id": "banned"}));
    assert_eq!(status_of(ban).await, StatusCode::NO_CONTENT);

    let keys = node.keys();
    let later = now_secs() + 3600;
    let other_key = TokenKeys::new(vec![vec![7; 32]]).unwrap();
    let refused = [
        signed(&keys, "club", "main", "banned", later),
        signed(&keys, "club", "elsewhere", "wrong-room", later),
        signed(&keys, "demo", "main", "wrong-site", later),
        signed(&other_key, "club", "main", "forged", later),
        signed(&keys, "club", "main", "expired", now_secs() - 1),
        "not-a-token".to_owned(),
    ];
    let mut present = vec![signed(&keys, "club", "main", "ok", later)];
    present.extend(refused.iter().cloned());
    let left = &refused[1..];
    let (status, body) = batch(&node, "club", "main", &present, left).await;
    assert_eq!((status, body), (StatusCode::OK, counts(1, 0, 11)));

    let listed: Value = node
        .get("/v1/sites/club/rooms/main/members")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["members"], json!([{"id": "ok", "nick": "nick-ok"}]));
    let metrics = node.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("chatty_api_presence_batch_tokens_total{outcome=\"refused\"}"),
        "{metrics}"
    );
    node.stop().await;
}

#[tokio::test]
async fn bad_bodies_unknown_sites_and_long_lists_are_refused() {
    let node = Node::start(|_| {}).await;
    let many = vec!["t".to_owned(); 1001];
    let huge = "t".repeat(2_100_000);
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({"site": "demo", "room": "r", "present": many}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            json!({"site": "demo", "room": "r", "left": many}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            json!({"site": "demo", "room": "r", "present": [huge]}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            json!({"site": "demo"}),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            json!({"site": "demo", "room": "r", "x": 1}),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            json!({"site": "demo", "room": "r", "present": "t"}),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            json!({"site": "demo", "room": "no room"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            json!({"site": "nosuch", "room": "r"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (body, status, code) in cases {
        let res = node.post_json(BATCH, None, &body).await;
        let shown = body.to_string().chars().take(80).collect::<String>();
        assert_eq!(res.status(), status, "{shown}");
        assert_eq!(error_code(res).await, code, "{shown}");
    }
    let res = node
        .client
        .post(node.url(BATCH))
        .header("content-type", "application/json")
        .body("{\"site\":")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(res).await, "invalid_json");

    // Lists at the limit and empty lists are fine.
    let full = vec!["t".to_owned(); 1000];
    let (status, body) = batch(&node, "demo", "r", &full, &full).await;
    assert_eq!((status, body), (StatusCode::OK, counts(0, 0, 2000)));
    let res = node
        .post_json(BATCH, None, &json!({"site": "demo", "room": "r"}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap(), counts(0, 0, 0));
    node.stop().await;
}

#[tokio::test]
async fn presence_down_answers_503_with_retry_after() {
    // Nothing listens on port 1: every presence call fails.
    let node = Node::start(|c| c.redis_url = Some("redis://127.0.0.1:1".into())).await;
    let a = token(&node, "down", "a");
    let res = node
        .post_json(
            BATCH,
            None,
            &json!({"site": "demo", "room": "down", "present": [a]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(error_code(res).await, "unavailable");
    node.stop().await;
}
