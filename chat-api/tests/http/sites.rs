//! Sites and their owners: the operator's sites, deletion, erasure, limits, bans
//! and allowed origins.

use super::*;

/// The room of the site `shop`.
const SHOP_ROOM: &str = "/v1/sites/shop/rooms/main";

/// A node with the site `shop`, created by the operator, and Ann in its
/// room `main`.
struct Shop {
    node: Node,
    /// The site owner's secret.
    secret: String,
    /// Ann's token and member id.
    token: String,
    member_id: String,
}

impl Shop {
    async fn start() -> Shop {
        let node = Node::start(|_| {}).await;
        let res = node
            .client
            .post(node.url("/v1/admin/sites"))
            .bearer_auth(OPERATOR)
            .json(
                &json!({"id": "shop", "origins": ["https://Shop.example/", "http://localhost:*"]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        let created: Value = res.json().await.unwrap();
        assert_eq!(
            created["site"]["origins"],
            json!(["https://shop.example", "http://localhost:*"])
        );
        let ann = shop_join(&node, "Ann").await;
        Shop {
            secret: created["secret"].as_str().unwrap().to_owned(),
            token: ann["token"].as_str().unwrap().to_owned(),
            member_id: ann["member"]["id"].as_str().unwrap().to_owned(),
            node,
        }
    }

    /// `method path`.
    fn request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.node.client.request(method, self.node.url(path))
    }

    /// `method` on the room's `part` (`join`, `messages`, …).
    fn room(&self, method: reqwest::Method, part: &str) -> RequestBuilder {
        self.request(method, &format!("{SHOP_ROOM}/{part}"))
    }

    /// A join of the room, without a token.
    async fn join(&self, nick: &str) -> Value {
        shop_join(&self.node, nick).await
    }

    /// A send by Ann.
    async fn send(&self, text: &str, client_id: &str) -> reqwest::Response {
        self.room(reqwest::Method::POST, "messages")
            .bearer_auth(&self.token)
            .json(&json!({"text": text, "client_id": client_id}))
            .send()
            .await
            .unwrap()
    }

    /// A request of the site's owner, with the site's secret.
    fn owner(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.request(method, path).bearer_auth(&self.secret)
    }

    /// The seq of the room's last event.
    async fn seq(&self) -> u64 {
        let page: Value = self
            .node
            .get(&format!("{SHOP_ROOM}/messages"))
            .await
            .json()
            .await
            .unwrap();
        page["seq"].as_u64().unwrap()
    }
}

/// A join of the shop's room, without a token.
async fn shop_join(node: &Node, nick: &str) -> Value {
    let res = node
        .post_json(&format!("{SHOP_ROOM}/join"), None, &json!({"nick": nick}))
        .await;
    res.json().await.unwrap()
}

#[tokio::test]
async fn the_operator_creates_and_lists_sites() {
    let shop = Shop::start().await;
    let create = |body: Value| {
        shop.request(reqwest::Method::POST, "/v1/admin/sites")
            .bearer_auth(OPERATOR)
            .json(&body)
    };
    let again = create(json!({"id": "shop", "origins": ["https://x.example"]}));
    assert_eq!(status_of(again).await, StatusCode::CONFLICT);
    let bad_origin = create(json!({"origins": ["javascript:alert(1)"]}));
    assert_eq!(status_of(bad_origin).await, StatusCode::BAD_REQUEST);
    let sites: Value = shop
        .request(reqwest::Method::GET, "/v1/admin/sites")
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = sites
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"demo") && ids.contains(&"shop"), "{ids:?}");

    // The frame's CSP names the site's origins.
    let res = shop.node.get(&format!("{SHOP_ROOM}/frame")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("frame-ancestors https://shop.example http://localhost:*"),
        "{csp}"
    );
    assert!(csp.contains("default-src 'self'"));
    shop.node.stop().await;
}

#[tokio::test]
async fn the_site_owner_deletes_messages() {
    let shop = Shop::start().await;
    assert_eq!(shop.send("spam", "a").await.status(), StatusCode::CREATED);
    assert_eq!(shop.send("fine", "b").await.status(), StatusCode::CREATED);

    // Wrong secret 401, unknown message 404, then the deletion event.
    let delete = |seq: &str| {
        shop.owner(
            reqwest::Method::DELETE,
            &format!("{SHOP_ROOM}/messages/{seq}"),
        )
    };
    let wrong = shop
        .room(reqwest::Method::DELETE, "messages/1")
        .bearer_auth("wrong");
    assert_eq!(status_of(wrong).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status_of(delete("99")).await, StatusCode::NOT_FOUND);
    assert_eq!(status_of(delete("x")).await, StatusCode::NOT_FOUND);
    let res = delete("1").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["etag"].to_str().unwrap().ends_with(".3\""));
    let deletion: Value = res.json().await.unwrap();
    assert_eq!(deletion["kind"], "deletion");
    assert_eq!(deletion["deletes"], 1);
    let bob = shop.join("Bob").await;
    let texts: Vec<&str> = bob["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["fine"], "a join leaves deleted messages out");
    assert_eq!(bob["seq"], 3);
    shop.node.stop().await;
}

#[tokio::test]
async fn the_site_owner_sets_limits() {
    let shop = Shop::start().await;
    let limits = |max_text_bytes: u32| {
        shop.owner(reqwest::Method::PUT, "/v1/sites/shop/limits")
            .json(&json!({"max_text_bytes": max_text_bytes, "guest_messages": 0, "guest_window_secs": 0}))
    };
    // A lower text limit applies at once.
    assert_eq!(status_of(limits(5)).await, StatusCode::OK);
    let res = shop.send("too long", "c").await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(status_of(limits(0)).await, StatusCode::BAD_REQUEST);
    shop.node.stop().await;
}

#[tokio::test]
async fn a_banned_guest_is_refused() {
    let shop = Shop::start().await;
    assert_eq!(shop.send("spam", "a").await.status(), StatusCode::CREATED);
    let seq = shop.seq().await;
    let ban = shop
        .owner(reqwest::Method::POST, "/v1/sites/shop/bans")
        .json(&json!({"member_id": shop.member_id}));
    assert_eq!(status_of(ban).await, StatusCode::NO_CONTENT);

    // 403 on send, heartbeat and join with the token; nothing stored.
    let res = shop.send("hi", "d").await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(res).await, "banned");
    let heartbeat = shop
        .room(reqwest::Method::POST, "heartbeat")
        .bearer_auth(&shop.token);
    assert_eq!(status_of(heartbeat).await, StatusCode::FORBIDDEN);
    let join = shop
        .room(reqwest::Method::POST, "join")
        .bearer_auth(&shop.token)
        .json(&json!({"nick": "Ann"}));
    assert_eq!(status_of(join).await, StatusCode::FORBIDDEN);
    assert_eq!(shop.seq().await, seq, "nothing stored after the ban");
    shop.node.stop().await;
}

#[tokio::test]
async fn an_erased_member_is_gone_from_every_room_and_the_log_says_so() {
    let shop = Shop::start().await;
    assert_eq!(
        shop.send("my address is 1 Main St", "a").await.status(),
        StatusCode::CREATED
    );
    let bob = shop.join("Bob").await;
    let bob_says = shop
        .room(reqwest::Method::POST, "messages")
        .bearer_auth(bob["token"].as_str().unwrap())
        .json(&json!({"text": "hello Ann", "client_id": "b"}));
    assert_eq!(status_of(bob_says).await, StatusCode::CREATED);
    // Ann in a second room of the site.
    let other: Value = shop
        .node
        .post_json(
            "/v1/sites/shop/rooms/side/join",
            None,
            &json!({"nick": "Ann"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let side = shop
        .request(reqwest::Method::POST, "/v1/sites/shop/rooms/side/messages")
        .bearer_auth(other["token"].as_str().unwrap())
        .json(&json!({"text": "also mine", "client_id": "c"}));
    assert_eq!(status_of(side).await, StatusCode::CREATED);
    let before = shop.seq().await;
    let erase = |secret: &str, member: &str| {
        shop.request(reqwest::Method::POST, "/v1/sites/shop/erase")
            .bearer_auth(secret)
            .json(&json!({ "member_id": member }))
    };
    assert_eq!(
        status_of(erase("wrong", &shop.member_id)).await,
        StatusCode::UNAUTHORIZED
    );
    let res = erase(&shop.secret, "not valid!").send().await.unwrap();
    assert_eq!(error_code(res).await, "invalid_field");
    for member in [&shop.member_id, other["member"]["id"].as_str().unwrap()] {
        let res = erase(&shop.secret, member).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let erased: Value = res.json().await.unwrap();
        assert_eq!(erased, json!({"messages": 1, "rooms": 1}), "{member}");
    }
    // The log moved: a deletion every reader sees, and no text left.
    assert_eq!(shop.seq().await, before + 1);
    let page: Value = shop
        .node
        .get(&format!("{SHOP_ROOM}/messages"))
        .await
        .json()
        .await
        .unwrap();
    let body = page.to_string();
    assert!(!body.contains("1 Main St"), "{body}");
    assert!(body.contains("hello Ann"), "others' messages stay: {body}");
    let side: Value = shop
        .node
        .get("/v1/sites/shop/rooms/side/messages")
        .await
        .json()
        .await
        .unwrap();
    assert!(!side.to_string().contains("also mine"), "{side}");
    let again: Value = erase(&shop.secret, &shop.member_id)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again, json!({"messages": 0, "rooms": 0}));
    shop.node.stop().await;
}

#[tokio::test]
async fn a_page_from_an_origin_the_site_does_not_list_is_refused() {
    let shop = Shop::start().await;
    let join = |origin: &str, nick: &str| {
        shop.room(reqwest::Method::POST, "join")
            .header("origin", origin)
            .json(&json!({"nick": nick}))
    };
    let res = join("https://evil.example", "Eve").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(res).await, "forbidden");
    let res = join("http://localhost:5173", "Lou").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    shop.node.stop().await;
}
