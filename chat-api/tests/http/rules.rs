//! A site's own rules over HTTP: setting and reading them, masked and
//! refused words, links, slow mode (the site's and a room's own), who may
//! change them, and the word on the bus that makes every node forget them.

use chat_api::{ed25519_public, sign_user_token, HostClaims, KeyAlg};
use chatty_shared::{BusEvent, BusMessage};
use reqwest::Method;

use super::*;

/// The site `forum`: its secret, on a node without rate limits (slow mode
/// is what is tested here).
struct Forum {
    node: Node,
    secret: String,
}

impl Forum {
    async fn start() -> Forum {
        let node = Node::start(|c| {
            c.guest_rate = chat_api::RateSetting(None);
            c.ip_rate = chat_api::RateSetting(None);
        })
        .await;
        let secret = node.create_site("forum", "https://forum.example").await;
        Forum { secret, node }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.node.client.request(method, self.node.url(path))
    }

    /// `PUT /v1/sites/forum/rules` with the site's secret.
    async fn set_rules(&self, rules: Value) -> reqwest::Response {
        self.request(Method::PUT, "/v1/sites/forum/rules")
            .bearer_auth(&self.secret)
            .json(&rules)
            .send()
            .await
            .unwrap()
    }

    async fn rules(&self) -> Value {
        let res = self
            .request(Method::GET, "/v1/sites/forum/rules")
            .bearer_auth(&self.secret)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.unwrap()
    }

    /// `PUT …/rooms/{room}/slow-mode` with the site's secret.
    async fn set_room_slow_mode(&self, room: &str, secs: Value) -> reqwest::Response {
        self.request(
            Method::PUT,
            &format!("/v1/sites/forum/rooms/{room}/slow-mode"),
        )
        .bearer_auth(&self.secret)
        .json(&json!({ "secs": secs }))
        .send()
        .await
        .unwrap()
    }

    /// A guest's token in `room`.
    async fn join(&self, room: &str, nick: &str) -> String {
        self.join_with_id(room, nick).await.0
    }

    /// A guest's token in `room`, and member id.
    async fn join_with_id(&self, room: &str, nick: &str) -> (String, String) {
        let res = self
            .node
            .post_json(
                &format!("/v1/sites/forum/rooms/{room}/join"),
                None,
                &json!({ "nick": nick }),
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        (
            body["token"].as_str().unwrap().to_owned(),
            body["member"]["id"].as_str().unwrap().to_owned(),
        )
    }

    async fn send(&self, room: &str, token: &str, text: &str) -> reqwest::Response {
        self.node
            .post_json(
                &format!("/v1/sites/forum/rooms/{room}/messages"),
                Some(token),
                &json!({"text": text, "client_id": format!("c{:08x}", rand_id())}),
            )
            .await
    }

    /// The texts stored in `room`, oldest first.
    async fn texts(&self, room: &str) -> Vec<String> {
        let page: Value = self
            .node
            .get(&format!("/v1/sites/forum/rooms/{room}/messages"))
            .await
            .json()
            .await
            .unwrap();
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["text"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn rand_id() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A refusal's status, code and `Retry-After`.
async fn refusal(res: reqwest::Response) -> (StatusCode, String, Option<u64>) {
    let status = res.status();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, error_code(res).await, retry)
}

#[tokio::test]
async fn rules_are_set_and_read_with_the_site_secret() {
    let f = Forum::start().await;
    assert_eq!(
        f.rules().await,
        json!({"blocked_words": [], "blocked_patterns": [], "action": "mask",
               "links": "allow", "slow_mode_secs": 0, "guests": "write"})
    );
    let res = f
        .set_rules(json!({"blocked_words": ["  darn ", "buy now"],
                          "blocked_patterns": ["fr[e3]{2}"], "action": "refuse",
                          "links": "deny", "slow_mode_secs": 5}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let set: Value = res.json().await.unwrap();
    let expect = json!({"blocked_words": ["darn", "buy now"],
                        "blocked_patterns": ["fr[e3]{2}"], "action": "refuse",
                        "links": "deny", "slow_mode_secs": 5, "guests": "write"});
    assert_eq!(set, expect);
    assert_eq!(f.rules().await, expect);
    // Omitted fields are their defaults: a PUT replaces the whole rules.
    assert_eq!(f.set_rules(json!({})).await.status(), StatusCode::OK);
    assert_eq!(f.rules().await["blocked_words"], json!([]));
}

#[tokio::test]
async fn bad_rules_are_refused_with_the_field_named() {
    let f = Forum::start().await;
    let many: Vec<String> = (0..501).map(|i| format!("w{i}")).collect();
    for (body, says) in [
        (
            json!({"blocked_patterns": ["("]}),
            "blocked_patterns entry 0",
        ),
        (
            json!({"blocked_patterns": ["ok", "a*"]}),
            "matches empty text",
        ),
        (
            json!({"blocked_patterns": [r"\w{100}\w{100}\w{100}"]}),
            "too large",
        ),
        (json!({"blocked_words": many}), "at most 500"),
        (
            json!({"blocked_words": ["x".repeat(101)]}),
            "longer than 100",
        ),
        (json!({"blocked_words": [" "]}), "is empty"),
        (json!({"slow_mode_secs": 86_401}), "slow_mode_secs"),
    ] {
        let res = f.set_rules(body.clone()).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body}");
        let err: Value = res.json().await.unwrap();
        assert_eq!(err["error"]["code"], "invalid_field", "{body}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    for body in [
        json!({"action": "delete"}),
        json!({"links": true}),
        json!({"blocked_words": "darn"}),
        json!({"colour": "red"}),
    ] {
        let res = f.set_rules(body.clone()).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body}");
        let code = error_code(res).await;
        assert!(
            ["invalid_json", "invalid_field"].contains(&code.as_str()),
            "{body}: {code}"
        );
    }
    let huge = json!({"blocked_words": vec!["x".repeat(100); 3000]});
    let res = f.set_rules(huge).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(f.rules().await["blocked_words"], json!([]), "nothing kept");
}

#[tokio::test]
async fn only_the_sites_owner_reads_and_sets_rules() {
    let f = Forum::start().await;
    let other_secret = {
        let res = f
            .request(Method::POST, "/v1/admin/sites")
            .bearer_auth(OPERATOR)
            .json(&json!({"id": "other", "origins": ["https://other.example"]}))
            .send()
            .await
            .unwrap();
        let created: Value = res.json().await.unwrap();
        created["secret"].as_str().unwrap().to_owned()
    };
    let body = json!({"blocked_words": ["x"]});
    let paths = [
        (Method::GET, "/v1/sites/forum/rules"),
        (Method::PUT, "/v1/sites/forum/rules"),
        (Method::PUT, "/v1/sites/forum/rooms/main/slow-mode"),
    ];
    for (method, path) in paths {
        let body = if path.ends_with("slow-mode") {
            json!({"secs": 5})
        } else {
            body.clone()
        };
        let without = f.request(method.clone(), path).json(&body);
        let wrong = f
            .request(method.clone(), path)
            .bearer_auth("not-the-secret")
            .json(&body);
        let others = f
            .request(method.clone(), path)
            .bearer_auth(&other_secret)
            .json(&body);
        let operator = f
            .request(method.clone(), path)
            .bearer_auth(OPERATOR)
            .json(&body);
        for req in [without, wrong, others, operator] {
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
            assert_eq!(error_code(res).await, "unauthorized");
        }
        let unknown = f
            .request(method.clone(), &path.replace("forum", "nosuch"))
            .bearer_auth(&f.secret)
            .json(&body);
        assert_eq!(status_of(unknown).await, StatusCode::NOT_FOUND);
    }
    assert_eq!(f.rules().await["blocked_words"], json!([]));
}

#[tokio::test]
async fn blocked_words_are_masked_in_what_is_stored() {
    let f = Forum::start().await;
    let ann = f.join("main", "Ann").await;
    f.set_rules(json!({"blocked_words": ["darn", "ñandú"], "blocked_patterns": [r"\d{3}-\d{4}"]}))
        .await;
    let res = f.send("main", &ann, "Darn, call 555-1234, Ñandú!").await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let event: Value = res.json().await.unwrap();
    assert_eq!(event["text"], "****, call ********, *****!");
    let res = f.send("main", &ann, "darned nice").await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(
        f.texts("main").await,
        ["****, call ********, *****!", "darned nice"]
    );
}

#[tokio::test]
async fn blocked_words_are_refused_and_nothing_stored() {
    let f = Forum::start().await;
    let ann = f.join("main", "Ann").await;
    f.set_rules(json!({"blocked_words": ["darn"], "action": "refuse"}))
        .await;
    let (status, code, retry) = refusal(f.send("main", &ann, "oh DARN").await).await;
    assert_eq!(
        (status, code.as_str(), retry),
        (StatusCode::UNPROCESSABLE_ENTITY, "blocked_text", None)
    );
    assert!(f.texts("main").await.is_empty());
    assert_eq!(
        f.send("main", &ann, "oh dear").await.status(),
        StatusCode::CREATED
    );
    // The longest message is still the limits' rule, answered first.
    let res = f
        .request(Method::PUT, "/v1/sites/forum/limits")
        .bearer_auth(&f.secret)
        .json(&json!({"max_text_bytes": 10, "guest_messages": 0, "guest_window_secs": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = f.send("main", &ann, "darn darn darn").await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(res).await, "too_large");
}

#[tokio::test]
async fn links_are_refused_to_guests_when_the_site_denies_them() {
    let f = Forum::start().await;
    let ann = f.join("main", "Ann").await;
    for text in ["see https://example.org/x", "visit shop.example.com"] {
        assert_eq!(
            f.send("main", &ann, text).await.status(),
            StatusCode::CREATED
        );
    }
    f.set_rules(json!({"links": "deny"})).await;
    for text in [
        "see https://example.org/x",
        "visit shop.example.com",
        "www.example",
    ] {
        let (status, code, _) = refusal(f.send("main", &ann, text).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, "links_not_allowed"),
            "{text}"
        );
    }
    assert_eq!(
        f.send("main", &ann, "e.g. version 1.2").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(f.texts("main").await.len(), 3);
}

#[tokio::test]
async fn slow_mode_allows_one_message_per_member_per_period() {
    let f = Forum::start().await;
    let ann = f.join("main", "Ann").await;
    let bob = f.join("main", "Bob").await;
    f.set_rules(json!({"slow_mode_secs": 30})).await;
    assert_eq!(
        f.send("main", &ann, "one").await.status(),
        StatusCode::CREATED
    );
    let (status, code, retry) = refusal(f.send("main", &ann, "two").await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "slow_mode")
    );
    let retry = retry.expect("Retry-After");
    assert!((1..=30).contains(&retry), "{retry}");
    // Another member, and the same member in another room, are not slowed
    // by Ann's message here.
    assert_eq!(
        f.send("main", &bob, "hi").await.status(),
        StatusCode::CREATED
    );
    let ann_hall = f.join("hall", "Ann").await;
    assert_eq!(
        f.send("hall", &ann_hall, "hi").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(f.texts("main").await, ["one", "hi"]);
}

#[tokio::test]
async fn slow_mode_comes_after_a_ban_and_before_the_rules() {
    let f = Forum::start().await;
    let (ann, ann_id) = f.join_with_id("main", "Ann").await;
    f.set_rules(json!({"slow_mode_secs": 30, "blocked_words": ["darn"], "action": "refuse"}))
        .await;
    let (_, code, _) = refusal(f.send("main", &ann, "darn").await).await;
    assert_eq!(code, "blocked_text", "the first send passes slow mode");
    let (_, code, _) = refusal(f.send("main", &ann, "darn").await).await;
    assert_eq!(code, "slow_mode", "and counts");
    let ban = f
        .request(Method::POST, "/v1/sites/forum/bans")
        .bearer_auth(&f.secret)
        .json(&json!({ "member_id": ann_id }));
    assert_eq!(status_of(ban).await, StatusCode::NO_CONTENT);
    let (status, code, _) = refusal(f.send("main", &ann, "hello").await).await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "banned"));
}

#[tokio::test]
async fn a_rooms_own_slow_mode_wins_over_the_sites() {
    let f = Forum::start().await;
    let ann_main = f.join("main", "Ann").await;
    let ann_hall = f.join("hall", "Ann").await;
    let ann_quiet = f.join("quiet", "Ann").await;
    f.set_rules(json!({"slow_mode_secs": 30})).await;
    let res = f.set_room_slow_mode("hall", json!(0)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"secs": 0}));
    for _ in 0..3 {
        assert_eq!(
            f.send("hall", &ann_hall, "free").await.status(),
            StatusCode::CREATED,
            "off in this room"
        );
    }
    f.set_rules(json!({})).await;
    f.set_room_slow_mode("quiet", json!(60)).await;
    assert_eq!(
        f.send("quiet", &ann_quiet, "1").await.status(),
        StatusCode::CREATED
    );
    let (status, code, retry) = refusal(f.send("quiet", &ann_quiet, "2").await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "slow_mode")
    );
    assert!(retry.unwrap() > 30, "the room's 60 s, not the site's");
    for _ in 0..3 {
        assert_eq!(
            f.send("main", &ann_main, "free").await.status(),
            StatusCode::CREATED,
            "the site's slow mode is off now"
        );
    }
    // Back to the site's (off).
    let res = f.set_room_slow_mode("quiet", Value::Null).await;
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"secs": null}));
    let ann_quiet2 = f.join("quiet", "Ann2").await;
    for _ in 0..2 {
        assert_eq!(
            f.send("quiet", &ann_quiet2, "free").await.status(),
            StatusCode::CREATED
        );
    }
    for (secs, path) in [
        (json!(86_401), "/v1/sites/forum/rooms/main/slow-mode"),
        (json!(-1), "/v1/sites/forum/rooms/main/slow-mode"),
        (json!(5), "/v1/sites/forum/rooms/no%20such/slow-mode"),
    ] {
        let req = f
            .request(Method::PUT, path)
            .bearer_auth(&f.secret)
            .json(&json!({ "secs": secs }));
        assert_eq!(
            status_of(req).await,
            StatusCode::BAD_REQUEST,
            "{secs} {path}"
        );
    }
}

#[tokio::test]
async fn a_change_is_in_force_at_once_and_said_on_the_bus() {
    let f = Forum::start().await;
    let mut bus = f.node.bus.subscribe();
    let ann = f.join("main", "Ann").await;
    // The rules are cached by this first send …
    assert_eq!(
        f.send("main", &ann, "darn").await.status(),
        StatusCode::CREATED
    );
    f.set_rules(json!({"blocked_words": ["darn"], "action": "refuse"}))
        .await;
    // … and forgotten by the change.
    let (_, code, _) = refusal(f.send("main", &ann, "darn").await).await;
    assert_eq!(code, "blocked_text");
    f.set_room_slow_mode("main", json!(10)).await;
    let res = f
        .request(Method::PUT, "/v1/sites/forum/limits")
        .bearer_auth(&f.secret)
        .json(&json!({"max_text_bytes": 100, "guest_messages": 0, "guest_window_secs": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut words = 0;
    while words < 3 {
        let event = tokio::time::timeout(Duration::from_secs(5), bus.recv())
            .await
            .expect("three words heard")
            .expect("the bus is open");
        if let BusEvent::Message(BusMessage::Site { site }) = event {
            assert_eq!(site, "forum");
            words += 1;
        }
    }
}

/// A verified user of `forum` signed in with `roles`: its guest token in
/// `room`.
async fn signed_in(f: &Forum, room: &str, sub: &str, roles: &[&str]) -> String {
    const SEED: [u8; 32] = [9; 32];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // The key may be there already (409): either way it is registered.
    f.request(Method::POST, "/v1/sites/forum/user-keys")
        .bearer_auth(&f.secret)
        .json(&json!({"kid": "k1", "alg": "ed25519", "key": ed25519_public(&SEED)}))
        .send()
        .await
        .unwrap();
    let claims = HostClaims {
        aud: "forum".into(),
        sub: sub.into(),
        name: format!("User {sub}"),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        iat: now,
        exp: now + 300,
        jti: format!("{sub}-{}", rand_id()),
    };
    let res = f
        .node
        .post_json(
            &format!("/v1/sites/forum/rooms/{room}/join"),
            None,
            &json!({"user_token": sign_user_token(&claims, "k1", KeyAlg::Ed25519, &SEED)}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn verified_users_may_link_and_moderators_are_not_slowed() {
    let f = Forum::start().await;
    f.set_rules(json!({"links": "deny", "slow_mode_secs": 60, "blocked_words": ["darn"]}))
        .await;
    let guest = f.join("main", "Guest").await;
    let user = signed_in(&f, "main", "42", &[]).await;
    let moderator = signed_in(&f, "main", "7", &["moderator"]).await;

    let (_, code, _) = refusal(f.send("main", &guest, "see example.com").await).await;
    assert_eq!(code, "links_not_allowed");
    let res = f.send("main", &user, "see example.com").await;
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "a verified user may link"
    );
    let (_, code, _) = refusal(f.send("main", &user, "again").await).await;
    assert_eq!(code, "slow_mode", "but is slowed like anyone");
    for text in ["one example.com", "two", "darn three"] {
        let res = f.send("main", &moderator, text).await;
        assert_eq!(res.status(), StatusCode::CREATED, "{text}");
    }
    assert_eq!(
        f.texts("main").await,
        ["see example.com", "one example.com", "two", "**** three"],
        "a moderator's words are masked like anyone's"
    );
}
