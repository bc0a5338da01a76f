//! Bad input refused with a clear 4xx JSON error, one line a case, and
//! nothing stored.

use super::*;

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
            moderator: false,
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
