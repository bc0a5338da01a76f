//! HTTP-level tests of one embedded API node (SQLite, in-process bus),
//! served on port 0 and driven with reqwest.

use std::time::Duration;

use chat_api::{App, Config};
use chat_api::{Claims, TokenKeys};
use chatty_shared::{parse_rate, Rate};
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{json, Value};

struct Node {
    base: String,
    client: Client,
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Node {
    async fn start(tweak: impl FnOnce(&mut Config)) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::embedded(dir.path());
        config.admin_token = Some(OPERATOR.into());
        config.node_name = Some("test-node".into());
        config.workers = Some(1);
        tweak(&mut config);
        let app = App::build(config).await.unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run(listener, async move {
            let _ = rx.await;
        }));
        let node = Node {
            base: format!("http://{addr}"),
            client: Client::new(),
            dir,
            stop: Some(tx),
            task: Some(task),
        };
        for _ in 0..100 {
            if node.get("/healthz").await.status() == StatusCode::OK {
                return node;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the node did not start");
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("stopped in time")
                .unwrap()
                .unwrap();
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> reqwest::Response {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    async fn join(&self, room: &str, nick: &str) -> Value {
        let res = self
            .post_json(
                &format!("/v1/sites/demo/rooms/{room}/join"),
                None,
                &json!({"nick": nick}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.unwrap()
    }

    async fn send(
        &self,
        room: &str,
        token: &str,
        text: &str,
        client_id: &str,
    ) -> reqwest::Response {
        self.post_json(
            &format!("/v1/sites/demo/rooms/{room}/messages"),
            Some(token),
            &json!({"text": text, "client_id": client_id}),
        )
        .await
    }

    /// The room's messages ETag and seq as a reader sees them.
    async fn version(&self, room: &str) -> (String, u64) {
        let res = self
            .get(&format!("/v1/sites/demo/rooms/{room}/messages"))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let etag = res.headers()["etag"].to_str().unwrap().to_owned();
        let page: Value = res.json().await.unwrap();
        (etag, page["seq"].as_u64().unwrap())
    }

    fn keys(&self) -> TokenKeys {
        let key = std::fs::read_to_string(self.dir.path().join("token.key")).unwrap();
        TokenKeys::new(vec![key.trim().as_bytes().to_vec()]).unwrap()
    }
}

async fn error_code(res: reqwest::Response) -> String {
    let body: Value = res.json().await.unwrap();
    body["error"]["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn join_send_poll_members_heartbeat_leave() {
    let node = Node::start(|_| {}).await;
    let (etag0, seq0) = node.version("lobby").await;
    assert_eq!((etag0.as_str(), seq0), ("\"r0.0\"", 0), "an unwritten room");

    let ann = node.join("lobby", " Ann ").await;
    assert_eq!(ann["member"]["nick"], "Ann");
    assert_eq!(ann["etag"], "\"r0.0\"");
    assert_eq!(ann["members"].as_array().unwrap().len(), 1);
    let token = ann["token"].as_str().unwrap();

    let res = node.send("lobby", token, "hello <b>world</b>", "c1").await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let etag1 = res.headers()["etag"].to_str().unwrap().to_owned();
    let event: Value = res.json().await.unwrap();
    assert_eq!(event["seq"], 1);
    assert_eq!(event["kind"], "message");
    assert_eq!(event["text"], "hello <b>world</b>");
    assert_eq!(event["nick"], "Ann");
    assert!(
        etag1.starts_with("\"r") && etag1.ends_with(".1\""),
        "{etag1}"
    );

    // Poll: the page, then 304 on the current ETag (from the cache and the
    // store alike), then 200 again after a new message.
    let res = node
        .get("/v1/sites/demo/rooms/lobby/messages?after=0")
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["etag"].to_str().unwrap(), etag1);
    assert_eq!(res.headers()["cache-control"], "no-cache");
    let page: Value = res.json().await.unwrap();
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert_eq!(page["seq"], 1);
    assert_eq!(page["more"], false);
    for inm in [
        etag1.clone(),
        format!("W/{etag1}"),
        format!("\"x\", {etag1}"),
        "*".into(),
    ] {
        let res = node
            .client
            .get(node.url("/v1/sites/demo/rooms/lobby/messages?after=1"))
            .header("if-none-match", inm.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "{inm}");
        assert_eq!(res.headers()["etag"].to_str().unwrap(), etag1);
        assert!(res.bytes().await.unwrap().is_empty());
    }
    let res = node.send("lobby", token, "second", "c2").await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = node
        .client
        .get(node.url("/v1/sites/demo/rooms/lobby/messages?after=1"))
        .header("if-none-match", etag1.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "a new message is never a 304");
    let page: Value = res.json().await.unwrap();
    assert_eq!(page["events"][0]["text"], "second");

    // Members: ETag and 304; a second guest changes it.
    let res = node.get("/v1/sites/demo/rooms/lobby/members").await;
    assert_eq!(res.status(), StatusCode::OK);
    let metag = res.headers()["etag"].to_str().unwrap().to_owned();
    assert!(metag.starts_with("\"m"));
    let res = node
        .client
        .get(node.url("/v1/sites/demo/rooms/lobby/members"))
        .header("if-none-match", metag.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    let bob = node.join("lobby", "Bob").await;
    assert_eq!(bob["members"].as_array().unwrap().len(), 2);
    assert_eq!(bob["messages"].as_array().unwrap().len(), 2);
    let res = node
        .client
        .get(node.url("/v1/sites/demo/rooms/lobby/members"))
        .header("if-none-match", metag.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // Heartbeat and leave.
    let bob_token = bob["token"].as_str().unwrap();
    let res = node
        .post_json(
            "/v1/sites/demo/rooms/lobby/heartbeat",
            Some(bob_token),
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = node
        .client
        .post(node.url("/v1/sites/demo/rooms/lobby/leave"))
        .bearer_auth(bob_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let members: Value = node
        .get("/v1/sites/demo/rooms/lobby/members")
        .await
        .json()
        .await
        .unwrap();
    let nicks: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["nick"].as_str().unwrap())
        .collect();
    assert_eq!(nicks, ["Ann"]);

    // A rejoin with the token keeps the member id.
    let res = node
        .post_json(
            "/v1/sites/demo/rooms/lobby/join",
            Some(bob_token),
            &json!({"nick": "Bobby"}),
        )
        .await;
    let again: Value = res.json().await.unwrap();
    assert_eq!(again["member"]["id"], bob["member"]["id"]);
    assert_eq!(again["member"]["nick"], "Bobby");
    node.stop().await;
}

#[tokio::test]
async fn a_retried_send_returns_the_original() {
    let node = Node::start(|_| {}).await;
    let ann = node.join("retry", "Ann").await;
    let token = ann["token"].as_str().unwrap();
    let first = node.send("retry", token, "once", "same-id").await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let again = node.send("retry", token, "once", "same-id").await;
    assert_eq!(again.status(), StatusCode::OK);
    let etag = again.headers()["etag"].to_str().unwrap().to_owned();
    let again: Value = again.json().await.unwrap();
    assert_eq!(first, again);
    assert!(etag.ends_with(".1\""));
    assert_eq!(node.version("retry").await.1, 1);
    node.stop().await;
}

/// How a request must be refused: its status and the code of its JSON
/// error body.
#[derive(Debug, Clone, Copy)]
struct Refused(u16, &'static str);

const INVALID_JSON: Refused = Refused(400, "invalid_json");
const INVALID_FIELD: Refused = Refused(400, "invalid_field");
const BAD_REQUEST: Refused = Refused(400, "bad_request");
const UNAUTHORIZED: Refused = Refused(401, "unauthorized");
const NOT_FOUND: Refused = Refused(404, "not_found");
const METHOD_NOT_ALLOWED: Refused = Refused(405, "method_not_allowed");
const TOO_LARGE: Refused = Refused(413, "too_large");

/// Sends `request` and asserts it is refused as `expect` says; `case`
/// names it in a failure.
async fn check(case: &str, request: RequestBuilder, expect: Refused) {
    let Refused(status, code) = expect;
    let res = request.send().await.unwrap();
    assert_eq!(res.status().as_u16(), status, "{case}");
    assert_eq!(error_code(res).await, code, "{case}");
}

/// A node with a guest in room [`BAD`], where the refused requests are
/// sent, and the tokens they carry.
struct Refusals {
    node: Node,
    /// The guest's token.
    token: String,
    /// A token of another room.
    other: String,
    /// The guest's token, expired.
    expired: String,
    /// The guest's token with its signature altered.
    forged: String,
}

/// The room the refused requests are sent to.
const BAD: &str = "bad";
const MSGS: &str = "/v1/sites/demo/rooms/bad/messages";
const JOIN: &str = "/v1/sites/demo/rooms/bad/join";

impl Refusals {
    async fn start() -> Refusals {
        let node = Node::start(|_| {}).await;
        let ann = node.join(BAD, "Ann").await;
        let token = ann["token"].as_str().unwrap().to_owned();
        let member_id = ann["member"]["id"].as_str().unwrap().to_owned();
        let other = node.join("elsewhere", "Ann").await["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let expired = node.keys().sign(&Claims {
            site: "demo".into(),
            room: BAD.into(),
            member_id,
            nick: "Ann".into(),
            exp: 1,
        });
        let forged = {
            let (payload, sig) = token.split_once('.').unwrap();
            let mut sig = sig.to_owned();
            let last = if sig.ends_with('A') { "B" } else { "A" };
            sig.replace_range(sig.len() - 1.., last);
            format!("{payload}.{sig}")
        };
        Refusals {
            node,
            token,
            other,
            expired,
            forged,
        }
    }

    /// `method path` with an empty body, and the token when given.
    fn bare(&self, method: &str, path: &str, token: Option<&str>) -> RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let req = self.node.client.request(method, self.node.url(path));
        let req = req.body(Vec::new());
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// A POST of `body` as `application/json`, whatever it holds.
    fn post(&self, path: &str, token: Option<&str>, body: impl AsRef<[u8]>) -> RequestBuilder {
        self.bare("POST", path, token)
            .header("content-type", "application/json")
            .body(body.as_ref().to_vec())
    }

    /// A POST of `body` to the room's messages with the guest's token.
    fn send(&self, body: impl AsRef<[u8]>) -> RequestBuilder {
        self.post(MSGS, Some(&self.token), body)
    }

    /// A POST of `{"nick": …}` to the room's join, without a token.
    fn join(&self, nick: &str) -> RequestBuilder {
        self.post(JOIN, None, json!({ "nick": nick }).to_string())
    }

    /// Asserts that none of the refused requests stored anything, and stops.
    async fn stop(self) {
        assert_eq!(
            self.node.version(BAD).await,
            ("\"r0.0\"".to_owned(), 0),
            "nothing was stored"
        );
        self.node.stop().await;
    }
}

/// The body of a send of `text`.
fn text(text: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"text": text, "client_id": "k1"})).unwrap()
}

#[tokio::test]
async fn bad_bodies_are_refused() {
    let r = Refusals::start().await;
    let plain = r
        .bare("POST", MSGS, Some(&r.token))
        .header("content-type", "text/plain");
    #[rustfmt::skip]
    let cases = [
        ("malformed json", r.send(b"{\"text\":"), INVALID_JSON),
        ("not json", r.send(b"hello"), INVALID_JSON),
        ("empty body", r.send(b""), INVALID_JSON),
        ("wrong type", r.send(br#"{"text":5,"client_id":"k"}"#), INVALID_FIELD),
        ("missing field", r.send(br#"{"text":"x"}"#), INVALID_FIELD),
        ("unknown field", r.send(br#"{"text":"x","client_id":"k","y":1}"#), INVALID_FIELD),
        ("empty text", r.send(text("")), INVALID_FIELD),
        ("blank text", r.send(text("  \n ")), INVALID_FIELD),
        ("oversized text", r.send(text(&"a".repeat(2001))), TOO_LARGE),
        ("oversized body", r.send(text(&"a".repeat(17 * 1024))), TOO_LARGE),
        ("invalid utf-8", r.send(b"{\"text\":\"\xff\xfe\",\"client_id\":\"k\"}"), INVALID_JSON),
        ("wrong content type", plain.body(text("hi")), BAD_REQUEST),
        ("bad client id", r.send(br#"{"text":"x","client_id":"a b"}"#), INVALID_FIELD),
    ];
    for (case, request, expect) in cases {
        check(case, request, expect).await;
    }
    r.stop().await;
}

#[tokio::test]
async fn bad_nicks_are_refused() {
    let r = Refusals::start().await;
    #[rustfmt::skip]
    let cases = [
        ("too-long nick", r.join(&"n".repeat(33)), INVALID_FIELD),
        ("bidi nick", r.join("a\u{202E}b"), INVALID_FIELD),
        ("control nick", r.join("a\u{7}b"), INVALID_FIELD),
        ("empty nick", r.post(JOIN, None, br#"{"nick":""}"#), INVALID_FIELD),
    ];
    for (case, request, expect) in cases {
        check(case, request, expect).await;
    }
    r.stop().await;
}

#[tokio::test]
async fn bad_sites_rooms_paths_and_queries_are_refused() {
    let r = Refusals::start().await;
    let t = Some(r.token.as_str());
    let poll = |after: &str| r.bare("GET", &format!("{MSGS}?after={after}"), None);
    #[rustfmt::skip]
    let cases = [
        ("unknown site", r.post("/v1/sites/nosuch/rooms/bad/messages", t, text("hi")), NOT_FOUND),
        ("invalid site id", r.bare("GET", "/v1/sites/No_Such/rooms/bad/messages", None), NOT_FOUND),
        ("bad room name", r.post("/v1/sites/demo/rooms/b%20ad/messages", t, text("hi")), BAD_REQUEST),
        ("bad room name on join", r.post("/v1/sites/demo/rooms/caf%C3%A9/join", None, br#"{"nick":"x"}"#), BAD_REQUEST),
        ("negative after", poll("-1"), BAD_REQUEST),
        ("non-numeric after", poll("abc"), BAD_REQUEST),
        ("huge after", poll("99999999999999999999999"), BAD_REQUEST),
        ("unknown path", r.bare("GET", "/v1/nothing", None), NOT_FOUND),
        ("wrong method", r.bare("PUT", MSGS, None), METHOD_NOT_ALLOWED),
    ];
    for (case, request, expect) in cases {
        check(case, request, expect).await;
    }
    r.stop().await;
}

#[tokio::test]
async fn bad_tokens_and_secrets_are_refused() {
    let r = Refusals::start().await;
    let hi = text("hi");
    #[rustfmt::skip]
    let cases = [
        ("missing token", r.post(MSGS, None, &hi), UNAUTHORIZED),
        ("forged token", r.post(MSGS, Some(&r.forged), &hi), UNAUTHORIZED),
        ("garbage token", r.post(MSGS, Some("x.y"), &hi), UNAUTHORIZED),
        ("expired token", r.post(MSGS, Some(&r.expired), &hi), UNAUTHORIZED),
        ("token of another room", r.post(MSGS, Some(&r.other), &hi), UNAUTHORIZED),
        ("join with a forged token", r.post(JOIN, Some(&r.forged), br#"{"nick":"x"}"#), UNAUTHORIZED),
        ("heartbeat without token", r.bare("POST", "/v1/sites/demo/rooms/bad/heartbeat", None), UNAUTHORIZED),
        ("delete without secret", r.bare("DELETE", &format!("{MSGS}/1"), None), UNAUTHORIZED),
        ("admin without token", r.bare("GET", "/v1/admin/sites", None), UNAUTHORIZED),
        ("admin with a wrong token", r.bare("GET", "/v1/admin/sites", Some("nope")), UNAUTHORIZED),
    ];
    for (case, request, expect) in cases {
        check(case, request, expect).await;
    }
    r.stop().await;
}

/// The operator token of every test node.
const OPERATOR: &str = "operator-token";
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

/// The status of the answer to `request`.
async fn status_of(request: RequestBuilder) -> StatusCode {
    request.send().await.unwrap().status()
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

#[tokio::test]
async fn assets_health_metrics_and_openapi() {
    let node = Node::start(|_| {}).await;
    let res = node.get("/v1/widget.js").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "public, max-age=300");
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    for path in ["/v1/frame.js", "/v1/frame.css", "/"] {
        assert_eq!(node.get(path).await.status(), StatusCode::OK, "{path}");
    }
    let res = node.get("/v1/sites/demo/rooms/lobby/frame").await;
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.ends_with("frame-ancestors http://localhost:* http://127.0.0.1:*"),
        "{csp}"
    );
    assert_eq!(
        node.get("/v1/sites/nosuch/rooms/lobby/frame")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let ready: Value = node.get("/readyz").await.json().await.unwrap();
    assert_eq!(
        ready,
        json!({"store": "ok", "bus": "ok", "draining": false})
    );
    let metrics = node.get("/metrics").await.text().await.unwrap();
    for name in [
        "chatty_api_requests_total",
        "chatty_api_request_duration_seconds",
        "chatty_api_rate_limited_total",
        "chatty_api_backend_up",
    ] {
        assert!(metrics.contains(name), "{name}");
    }
    let doc: Value = node.get("/v1/openapi.json").await.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(doc["paths"]["/v1/sites/{site}/rooms/{room}/messages"]["get"].is_object());
    node.stop().await;

    // Without the demo site, / is a 404.
    let node = Node::start(|c| c.demo_site = Some(false)).await;
    assert_eq!(node.get("/").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        node.get("/v1/sites/demo/rooms/lobby/messages")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    node.stop().await;
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let node = Node::start(|c| {
        c.guest_rate = chat_api::RateSetting(parse_rate("2/1m").unwrap());
    })
    .await;
    let ann = node.join("rl", "Ann").await;
    let token = ann["token"].as_str().unwrap();
    for i in 0..2 {
        assert_eq!(
            node.send("rl", token, "x", &format!("c{i}")).await.status(),
            StatusCode::CREATED
        );
    }
    let res = node.send("rl", token, "x", "c9").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=120).contains(&after), "{after}");
    assert_eq!(error_code(res).await, "rate_limited");
    assert_eq!(
        node.version("rl").await.1,
        2,
        "the limited send stored nothing"
    );
    node.stop().await;

    let node = Node::start(|c| {
        c.ip_rate = chatty_api_rate(Rate {
            count: 2,
            per: Duration::from_secs(60),
        });
    })
    .await;
    node.join("rl", "a").await;
    node.join("rl", "b").await;
    let res = node
        .post_json("/v1/sites/demo/rooms/rl/join", None, &json!({"nick": "c"}))
        .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    node.stop().await;
}

fn chatty_api_rate(rate: Rate) -> chat_api::RateSetting {
    chat_api::RateSetting(Some(rate))
}

/// The OpenAPI document and the routes agree: every documented operation
/// is served (neither 404 nor 405 for the demo site), and every other
/// method on a documented path is a 405.
#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let node = Node::start(|_| {}).await;
    let doc: Value = node.get("/v1/openapi.json").await.json().await.unwrap();
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 18, "{} paths", paths.len());
    for (path, ops) in paths {
        let concrete = path
            .replace("{site}", "demo")
            .replace("{room}", "lobby")
            .replace("{seq}", "1");
        for method in ["get", "post", "put", "delete", "patch"] {
            let res = node
                .client
                .request(method.to_uppercase().parse().unwrap(), node.url(&concrete))
                .send()
                .await
                .unwrap();
            let status = res.status();
            if ops.get(method).is_some() {
                assert!(
                    status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is documented but answers {status}"
                );
                let documented = &ops[method]["responses"][status.as_str()];
                assert!(
                    documented.is_object(),
                    "{method} {path} answers {status}, which the document does not list"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is not documented"
                );
            }
        }
    }
    node.stop().await;
}
