//! Signed-in users of a host site: its user-token keys, the exchange of a
//! user token at join, its refusals, rotation, and the names verified users
//! hold.

use super::*;
use chat_api::{ed25519_public, sign_user_token, HostClaims, KeyAlg};

const ROOM: &str = "/v1/sites/news/rooms/front";
const SEED: [u8; 32] = [3; 32];
const NEXT_SEED: [u8; 32] = [4; 32];

/// A node with the site `news`, and its owner's secret.
async fn news() -> (Node, String) {
    let node = Node::start(|_| {}).await;
    let secret = node.create_site("news", "http://localhost:*").await;
    (node, secret)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token for user `sub` named `name`, signed with `seed` as key `kid`.
fn user_token(sub: &str, name: &str, roles: &[&str], kid: &str, seed: &[u8; 32]) -> String {
    let claims = HostClaims {
        aud: "news".into(),
        sub: sub.into(),
        name: name.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        iat: now(),
        exp: now() + 300,
        jti: format!("{sub}-{}", rand_suffix()),
    };
    sign_user_token(&claims, kid, KeyAlg::Ed25519, seed)
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

async fn add_key(
    node: &Node,
    secret: Option<&str>,
    kid: &str,
    seed: &[u8; 32],
) -> reqwest::Response {
    node.post_json(
        "/v1/sites/news/user-keys",
        secret,
        &json!({"kid": kid, "alg": "ed25519", "key": ed25519_public(seed)}),
    )
    .await
}

async fn join(node: &Node, body: Value) -> reqwest::Response {
    node.post_json(&format!("{ROOM}/join"), None, &body).await
}

#[tokio::test]
async fn a_signed_in_user_joins_verified_and_a_moderator_is_told_so() {
    let (node, secret) = news().await;
    assert_eq!(
        add_key(&node, Some(&secret), "k1", &SEED).await.status(),
        StatusCode::CREATED
    );
    let token = user_token("42", "Ann Editor", &[], "k1", &SEED);
    let res = join(&node, json!({"user_token": token})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let ann: Value = res.json().await.unwrap();
    assert_eq!(ann["member"], json!({"id": "u_42", "nick": "Ann Editor"}));
    assert!(ann.get("moderator").is_none(), "{ann}");
    // A nick sent beside the token is ignored: the name is the site's.
    let token = user_token("7", "Mo Derator", &["moderator"], "k1", &SEED);
    let mo: Value = join(&node, json!({"user_token": token, "nick": "Someone"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mo["member"], json!({"id": "u_7", "nick": "Mo Derator"}));
    assert_eq!(mo["moderator"], json!(true));
    // Renewed with its guest token, a verified member keeps the site's
    // name and role, whatever nick is sent (and its own name is no clash).
    let renewed: Value = node
        .post_json(
            &format!("{ROOM}/join"),
            mo["token"].as_str(),
            &json!({"nick": "Other"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        renewed["member"],
        json!({"id": "u_7", "nick": "Mo Derator"})
    );
    assert_eq!(renewed["moderator"], json!(true));
    // The guest token it got works like any other.
    let sent = node
        .post_json(
            &format!("{ROOM}/messages"),
            mo["token"].as_str(),
            &json!({"text": "welcome", "client_id": "c1"}),
        )
        .await;
    assert_eq!(sent.status(), StatusCode::CREATED);
    let event: Value = sent.json().await.unwrap();
    assert_eq!(event["member_id"], "u_7");
    node.stop().await;
}

#[tokio::test]
async fn refused_user_tokens_say_why_and_a_token_works_once() {
    let (node, secret) = news().await;
    add_key(&node, Some(&secret), "k1", &SEED).await;
    let good = user_token("42", "Ann", &[], "k1", &SEED);
    let refused = |token: String, why: &'static str| {
        let node = &node;
        async move {
            let res = join(node, json!({"user_token": token})).await;
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{why}");
            let body: Value = res.json().await.unwrap();
            let message = body["error"]["message"].as_str().unwrap().to_owned();
            assert!(message.contains(why), "{why}: {message}");
        }
    };
    refused(
        user_token("42", "Ann", &[], "k9", &SEED),
        "key this site has not registered",
    )
    .await;
    refused(user_token("42", "Ann", &[], "k1", &NEXT_SEED), "signature").await;
    refused("not.a.token".into(), "malformed").await;
    let mut other_site = HostClaims {
        aud: "shop".into(),
        sub: "42".into(),
        name: "Ann".into(),
        roles: vec![],
        iat: now(),
        exp: now() + 60,
        jti: "x1".into(),
    };
    refused(
        sign_user_token(&other_site, "k1", KeyAlg::Ed25519, &SEED),
        "another site",
    )
    .await;
    other_site.aud = "news".into();
    other_site.exp = now() - 120;
    other_site.iat = now() - 180;
    refused(
        sign_user_token(&other_site, "k1", KeyAlg::Ed25519, &SEED),
        "expired",
    )
    .await;
    // Once accepted, the same token is refused.
    assert_eq!(
        join(&node, json!({"user_token": good.clone()}))
            .await
            .status(),
        StatusCode::OK
    );
    refused(good, "already used").await;
    node.stop().await;
}

#[tokio::test]
async fn keys_rotate_and_only_the_site_owner_manages_them() {
    let (node, secret) = news().await;
    assert_eq!(
        add_key(&node, None, "k1", &SEED).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        add_key(&node, Some("wrong"), "k1", &SEED).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        add_key(&node, Some(&secret), "k1", &SEED).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        add_key(&node, Some(&secret), "k1", &NEXT_SEED)
            .await
            .status(),
        StatusCode::CONFLICT
    );
    let bad = node
        .post_json(
            "/v1/sites/news/user-keys",
            Some(&secret),
            &json!({"kid": "k3", "alg": "ed25519", "key": "c2hvcnQ"}),
        )
        .await;
    assert_eq!(error_code(bad).await, "invalid_field");
    // Rotation: the new key beside the old, then the old removed.
    add_key(&node, Some(&secret), "k2", &NEXT_SEED).await;
    let listed: Value = node
        .client
        .get(node.url("/v1/sites/news/user-keys"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed,
        json!([{"kid": "k1", "alg": "ed25519"}, {"kid": "k2", "alg": "ed25519"}])
    );
    for (kid, seed) in [("k1", &SEED), ("k2", &NEXT_SEED)] {
        let res = join(
            &node,
            json!({"user_token": user_token("1", "Ann", &[], kid, seed)}),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK, "{kid} during the rotation");
    }
    let removed = node
        .client
        .delete(node.url("/v1/sites/news/user-keys/k1"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    let old = join(
        &node,
        json!({"user_token": user_token("1", "Ann", &[], "k1", &SEED)}),
    )
    .await;
    assert_eq!(
        old.status(),
        StatusCode::UNAUTHORIZED,
        "the removed key, at once on this node"
    );
    let new = join(
        &node,
        json!({"user_token": user_token("1", "Ann", &[], "k2", &NEXT_SEED)}),
    )
    .await;
    assert_eq!(new.status(), StatusCode::OK);
    node.stop().await;
}

#[tokio::test]
async fn a_guest_cannot_take_a_present_verified_users_name_nor_the_mark() {
    let (node, secret) = news().await;
    add_key(&node, Some(&secret), "k1", &SEED).await;
    let guest = |nick: &'static str| join(&node, json!({ "nick": nick }));
    // Free before the verified user is here.
    assert_eq!(guest("Ann Editor").await.status(), StatusCode::OK);
    let token = user_token("42", "Ann Editor", &[], "k1", &SEED);
    assert_eq!(
        join(&node, json!({"user_token": token})).await.status(),
        StatusCode::OK
    );
    for copy in ["Ann Editor", "ann editor", "Ann.Editor", "ANN-EDITOR"] {
        let res = guest(copy).await;
        assert_eq!(res.status(), StatusCode::CONFLICT, "{copy}");
        assert_eq!(error_code(res).await, "conflict");
    }
    for marked in ["Bob ✓", "✔ Bob", "Bob ✅"] {
        let res = guest(marked).await;
        assert_eq!(error_code(res).await, "invalid_field", "{marked}");
    }
    assert_eq!(guest("Ann Editor Fan").await.status(), StatusCode::OK);
    node.stop().await;
}

#[tokio::test]
async fn where_guests_may_only_read_only_signed_in_users_join_and_write() {
    let (node, secret) = news().await;
    add_key(&node, Some(&secret), "k1", &SEED).await;
    let early: Value = join(&node, json!({"nick": "Early Guest"}))
        .await
        .json()
        .await
        .unwrap();
    let rules = node
        .client
        .put(node.url("/v1/sites/news/rules"))
        .bearer_auth(&secret)
        .json(&json!({"guests": "read"}))
        .send()
        .await
        .unwrap();
    assert_eq!(rules.status(), StatusCode::OK);
    let res = join(&node, json!({"nick": "Late Guest"})).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(res).await, "read_only");
    let send = |token: String, id: &'static str| {
        let node = &node;
        async move {
            node.post_json(
                &format!("{ROOM}/messages"),
                Some(&token),
                &json!({"text": "hello", "client_id": id}),
            )
            .await
        }
    };
    // A guest who joined before the change writes no more.
    let res = send(early["token"].as_str().unwrap().to_owned(), "g1").await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(res).await, "read_only");
    // Reading stays open; the site's own users join and write.
    assert_eq!(
        node.get(&format!("{ROOM}/messages")).await.status(),
        StatusCode::OK
    );
    let ann: Value = join(
        &node,
        json!({"user_token": user_token("42", "Ann", &[], "k1", &SEED)}),
    )
    .await
    .json()
    .await
    .unwrap();
    let res = send(ann["token"].as_str().unwrap().to_owned(), "a1").await;
    assert_eq!(res.status(), StatusCode::CREATED);
    node.stop().await;
}
