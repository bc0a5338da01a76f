//! Moderators in the chat: who may act (a moderator of the room or the
//! site's secret; never a guest, never on oneself or another moderator),
//! every action as an event in the room's log, timeouts that end, and the
//! site's audit.

use super::*;
use chat_api::{ed25519_public, sign_user_token, HostClaims, KeyAlg};

const ROOM: &str = "/v1/sites/news/rooms/front";
const SEED: [u8; 32] = [9; 32];

/// A node with the site `news` and a user-token key, and the site's secret.
async fn news() -> (Node, String) {
    let node = Node::start(|_| {}).await;
    let secret = node.create_site("news", "http://localhost:*").await;
    let key = json!({"kid": "k1", "alg": "ed25519", "key": ed25519_public(&SEED)});
    let res = node
        .post_json("/v1/sites/news/user-keys", Some(&secret), &key)
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    (node, secret)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Joins `front` as the site's user `sub`, with `roles`.
async fn join_user(node: &Node, sub: &str, name: &str, roles: &[&str]) -> Value {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let claims = HostClaims {
        aud: "news".into(),
        sub: sub.into(),
        name: name.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        iat: now(),
        exp: now() + 300,
        jti: format!("mod-{sub}-{}", N.fetch_add(1, Ordering::Relaxed)),
    };
    let token = sign_user_token(&claims, "k1", KeyAlg::Ed25519, &SEED);
    let res = node
        .post_json(&format!("{ROOM}/join"), None, &json!({"user_token": token}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

async fn join_guest(node: &Node, nick: &str) -> Value {
    let res = node
        .post_json(&format!("{ROOM}/join"), None, &json!({"nick": nick}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

fn token(joined: &Value) -> &str {
    joined["token"].as_str().unwrap()
}

fn id(joined: &Value) -> &str {
    joined["member"]["id"].as_str().unwrap()
}

async fn moderate(node: &Node, auth: Option<&str>, body: Value) -> reqwest::Response {
    node.post_json(&format!("{ROOM}/moderation"), auth, &body)
        .await
}

/// The moderation event of a successful action.
async fn acted(node: &Node, auth: &str, body: Value) -> Value {
    let res = moderate(node, Some(auth), body.clone()).await;
    assert_eq!(res.status(), StatusCode::OK, "{body}");
    assert!(res.headers().contains_key("etag"));
    let answer: Value = res.json().await.unwrap();
    let event = answer["event"].clone();
    assert_eq!(event["kind"], "moderation", "{answer}");
    event
}

async fn send(node: &Node, who: &Value, text: &str) -> reqwest::Response {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let client_id = format!("c{}", N.fetch_add(1, Ordering::Relaxed));
    node.post_json(
        &format!("{ROOM}/messages"),
        Some(token(who)),
        &json!({"text": text, "client_id": client_id}),
    )
    .await
}

async fn sent_seq(node: &Node, who: &Value, text: &str) -> u64 {
    let res = send(node, who, text).await;
    assert_eq!(res.status(), StatusCode::CREATED, "{text}");
    let event: Value = res.json().await.unwrap();
    event["seq"].as_u64().unwrap()
}

async fn events_after(node: &Node, after: u64) -> Vec<Value> {
    let page: Value = node
        .get(&format!("{ROOM}/messages?after={after}"))
        .await
        .json()
        .await
        .unwrap();
    page["events"].as_array().unwrap().clone()
}

async fn delete(node: &Node, auth: Option<&str>, seq: u64) -> reqwest::Response {
    let mut req = node
        .client
        .delete(node.url(&format!("{ROOM}/messages/{seq}")));
    if let Some(auth) = auth {
        req = req.bearer_auth(auth);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn only_moderators_and_the_site_act_and_never_on_a_moderator() {
    let (node, secret) = news().await;
    let mo = join_user(&node, "7", "Mo Derator", &["moderator"]).await;
    assert_eq!(mo["moderator"], json!(true));
    let other_mo = join_user(&node, "8", "Other Mod", &["moderator"]).await;
    let ann = join_user(&node, "42", "Ann", &[]).await;
    let gus = join_guest(&node, "Gus").await;
    let timeout = |member: &str| json!({"action": "timeout", "member_id": member, "secs": 60});

    // A guest, a verified user without the role: 403; nothing: 401.
    for who in [&gus, &ann] {
        let res = moderate(&node, Some(token(who)), timeout(id(&mo))).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("moderators only"));
    }
    for auth in [None, Some("not-a-token"), Some("a.b")] {
        let res = moderate(&node, auth, timeout(id(&gus))).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
    }
    // A moderator's token of another room is no moderator here.
    let elsewhere = node
        .post_json(
            "/v1/sites/news/rooms/back/moderation",
            Some(token(&mo)),
            &timeout(id(&gus)),
        )
        .await;
    assert_eq!(elsewhere.status(), StatusCode::UNAUTHORIZED);
    // Not on itself, not on another moderator.
    for target in [id(&mo), id(&other_mo)] {
        let res = moderate(&node, Some(token(&mo)), timeout(target)).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{target}");
        assert_eq!(error_code(res).await, "forbidden");
    }
    // Nor delete another moderator's message (its own, yes).
    let theirs = sent_seq(&node, &other_mo, "from the other mod").await;
    assert_eq!(
        delete(&node, Some(token(&mo)), theirs).await.status(),
        StatusCode::FORBIDDEN
    );
    let own = sent_seq(&node, &mo, "my own").await;
    assert_eq!(
        delete(&node, Some(token(&mo)), own).await.status(),
        StatusCode::OK
    );
    // A guest may not delete.
    let gus_says = sent_seq(&node, &gus, "hello").await;
    assert_eq!(
        delete(&node, Some(token(&gus)), gus_says).await.status(),
        StatusCode::FORBIDDEN
    );
    // The site's secret acts on anyone, a moderator included.
    assert_eq!(
        delete(&node, Some(&secret), theirs).await.status(),
        StatusCode::OK
    );
    let event = acted(
        &node,
        &secret,
        json!({"action": "clear", "member_id": id(&other_mo)}),
    )
    .await;
    assert_eq!(event["nick"], "", "the site's owner has no name");
    assert_eq!(event["member_id"], "u_8");
    // Ann and Gus are moderated by Mo.
    let event = acted(&node, token(&mo), timeout(id(&ann))).await;
    assert_eq!(event["nick"], "Mo Derator");
    // A moderator whose role is gone (a new user token without it) is
    // no longer protected from another moderator.
    join_user(&node, "8", "Other Mod", &[]).await;
    acted(&node, token(&mo), timeout("u_8")).await;
    node.stop().await;
}

#[tokio::test]
async fn a_timeout_refuses_sends_and_joins_until_it_ends() {
    let (node, secret) = news().await;
    let mo = join_user(&node, "7", "Mo", &["moderator"]).await;
    let gus = join_guest(&node, "Gus").await;
    let ann = join_user(&node, "42", "Ann", &[]).await;
    let event = acted(
        &node,
        token(&mo),
        json!({"action": "timeout", "member_id": id(&gus), "secs": 2}),
    )
    .await;
    assert_eq!(event["member_id"], id(&gus));
    assert_eq!(event["text"], "timeout:2");
    let res = send(&node, &gus, "let me talk").await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "timed_out");
    assert!(body["error"]["message"].as_str().unwrap().contains("until"));
    // Joining again with its token keeps its id, and the timeout.
    let rejoin = node
        .post_json(
            &format!("{ROOM}/join"),
            Some(token(&gus)),
            &json!({"nick": "NotGus"}),
        )
        .await;
    assert_eq!(rejoin.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(rejoin).await, "timed_out");
    // Other members are not touched.
    assert_eq!(
        send(&node, &ann, "still here").await.status(),
        StatusCode::CREATED
    );
    // A verified user's timeout holds across its new tokens.
    acted(
        &node,
        &secret,
        json!({"action": "timeout", "member_id": "u_42", "secs": 2}),
    )
    .await;
    let again = join_user_status(&node, "42").await;
    assert_eq!(again, StatusCode::FORBIDDEN);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(
        send(&node, &gus, "back").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        send(&node, &ann, "me too").await.status(),
        StatusCode::CREATED
    );
    node.stop().await;
}

/// The status of a join as the site's user `sub`.
async fn join_user_status(node: &Node, sub: &str) -> StatusCode {
    let claims = HostClaims {
        aud: "news".into(),
        sub: sub.into(),
        name: "Again".into(),
        roles: vec![],
        iat: now(),
        exp: now() + 300,
        jti: format!("again-{sub}-{}", now()),
    };
    let token = sign_user_token(&claims, "k1", KeyAlg::Ed25519, &SEED);
    node.post_json(&format!("{ROOM}/join"), None, &json!({"user_token": token}))
        .await
        .status()
}

#[tokio::test]
async fn clear_ban_slow_mode_delete_and_the_audit() {
    let (node, secret) = news().await;
    let mo = join_user(&node, "7", "Mo", &["moderator"]).await;
    let gus = join_guest(&node, "Gus").await;
    let hal = join_guest(&node, "Hal").await;
    let g1 = sent_seq(&node, &gus, "spam one").await;
    let h1 = sent_seq(&node, &hal, "reasonable").await;
    let g2 = sent_seq(&node, &gus, "spam two").await;
    let g3 = sent_seq(&node, &gus, "spam three").await;

    // Delete: the deletion event, as before.
    let res = delete(&node, Some(token(&mo)), g1).await;
    assert_eq!(res.status(), StatusCode::OK);
    let deletion: Value = res.json().await.unwrap();
    assert_eq!(deletion["kind"], "deletion");
    assert_eq!(deletion["deletes"], g1);
    let after = deletion["seq"].as_u64().unwrap();

    // Clear: a deletion for each of Gus's messages left, then the event.
    let clear = acted(
        &node,
        token(&mo),
        json!({"action": "clear", "member_id": id(&gus)}),
    )
    .await;
    assert_eq!(clear["text"], "clear");
    let events = events_after(&node, after).await;
    let deleted: Vec<u64> = events
        .iter()
        .filter(|e| e["kind"] == "deletion")
        .map(|e| e["deletes"].as_u64().unwrap())
        .collect();
    assert_eq!(deleted, [g2, g3]);
    assert_eq!(events.last().unwrap(), &clear);
    let page = events_after(&node, 0).await;
    let live: Vec<u64> = page
        .iter()
        .filter(|e| e["kind"] == "message")
        .map(|e| e["seq"].as_u64().unwrap())
        .filter(|s| !page.iter().any(|e| e["deletes"] == *s))
        .collect();
    assert_eq!(live, [h1], "only Hal's message is left");

    // Slow mode for the room, from the chat.
    let slow = acted(
        &node,
        token(&mo),
        json!({"action": "slow_mode", "secs": 30}),
    )
    .await;
    assert_eq!(
        (slow["text"].as_str(), slow["member_id"].as_str()),
        (Some("slow_mode:30"), Some(""))
    );
    assert_eq!(send(&node, &hal, "one").await.status(), StatusCode::CREATED);
    let res = send(&node, &hal, "two").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_code(res).await, "slow_mode");
    acted(&node, token(&mo), json!({"action": "slow_mode", "secs": 0})).await;
    assert_eq!(
        send(&node, &hal, "three").await.status(),
        StatusCode::CREATED
    );

    // Ban: site-wide, at once.
    let ban = acted(
        &node,
        token(&mo),
        json!({"action": "ban", "member_id": id(&gus)}),
    )
    .await;
    assert_eq!(ban["text"], "ban");
    let res = send(&node, &gus, "hello?").await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(res).await, "banned");

    // Bodies refused.
    for bad in [
        json!({"action": "timeout", "member_id": "g", "secs": 0}),
        json!({"action": "timeout", "member_id": "g", "secs": 604_801}),
        json!({"action": "timeout", "member_id": "g"}),
        json!({"action": "slow_mode", "secs": 86_401}),
        json!({"action": "ban", "member_id": "not ok!"}),
        json!({"action": "kick", "member_id": "g"}),
        json!({"action": "ban", "member_id": "g", "extra": 1}),
    ] {
        let res = moderate(&node, Some(token(&mo)), bad.clone()).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad}");
    }

    // The audit: the site's secret only, newest first.
    let audit = |auth: Option<String>, query: &'static str| {
        let node = &node;
        async move {
            let mut req = node
                .client
                .get(node.url(&format!("/v1/sites/news/audit{query}")));
            if let Some(auth) = auth {
                req = req.bearer_auth(auth);
            }
            req.send().await.unwrap()
        }
    };
    assert_eq!(audit(None, "").await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        audit(Some(token(&mo).to_owned()), "").await.status(),
        StatusCode::UNAUTHORIZED
    );
    for bad in ["?limit=0", "?limit=1001", "?limit=x"] {
        assert_eq!(
            audit(Some(secret.clone()), bad).await.status(),
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    let lines: Value = audit(Some(secret.clone()), "").await.json().await.unwrap();
    let actions: Vec<&str> = lines
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["ban", "slow_mode", "slow_mode", "clear", "delete"]
    );
    assert_eq!(lines[0]["moderator_id"], "u_7");
    assert_eq!(lines[0]["moderator_nick"], "Mo");
    assert_eq!(lines[0]["member_id"], id(&gus));
    assert_eq!(lines[0]["room"], "front");
    assert_eq!(lines[0]["seq"], ban["seq"]);
    assert_eq!(lines[1]["secs"], 0);
    assert!(lines[1].get("member_id").is_none());
    assert_eq!(
        lines[4]["member_id"],
        id(&gus),
        "the deleted message's author"
    );
    assert_eq!(lines[4]["seq"], deletion["seq"]);
    // The site's own actions have no moderator.
    acted(
        &node,
        &secret,
        json!({"action": "timeout", "member_id": id(&hal), "secs": 5}),
    )
    .await;
    let newest: Value = audit(Some(secret.clone()), "?limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(newest.as_array().unwrap().len(), 1);
    assert_eq!(newest[0]["moderator_id"], "");
    assert_eq!(newest[0]["action"], "timeout");
    assert_eq!(newest[0]["secs"], 5);
    node.stop().await;
}

#[tokio::test]
async fn a_clear_is_published_once_at_the_room_s_last_event() {
    let (node, _secret) = news().await;
    let mo = join_user(&node, "7", "Mo", &["moderator"]).await;
    let gus = join_guest(&node, "Gus").await;
    sent_seq(&node, &gus, "a").await;
    sent_seq(&node, &gus, "b").await;
    let mut bus = node.bus.subscribe();
    let clear = acted(
        &node,
        token(&mo),
        json!({"action": "clear", "member_id": id(&gus)}),
    )
    .await;
    let last = clear["seq"].as_u64().unwrap();
    // A later send in another room fences what the clear published.
    let other = node
        .post_json(
            "/v1/sites/news/rooms/fence/join",
            None,
            &json!({"nick": "F"}),
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    let fenced = node
        .post_json(
            "/v1/sites/news/rooms/fence/messages",
            other["token"].as_str(),
            &json!({"text": "x", "client_id": "f1"}),
        )
        .await;
    assert_eq!(fenced.status(), StatusCode::CREATED);
    let mut seqs = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), bus.recv())
            .await
            .expect("heard in time")
            .expect("the bus is open");
        if let chatty_shared::BusEvent::Message(chatty_shared::BusMessage::Room { key, version }) =
            event
        {
            match key.room() {
                "front" => seqs.push(version.seq),
                "fence" => break,
                _ => {}
            }
        }
    }
    assert_eq!(seqs, [last], "two deletions and the event, one word");
    node.stop().await;
}
