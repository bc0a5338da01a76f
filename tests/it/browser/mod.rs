//! Real headless Chromium against `chatty up` or a local stack, by subject
//! in the modules below; the steps they share (open the widget, join, say,
//! wait for a message, read the frame, sign a user token) are here.

use chatty_tests::browser::{
    axe_source, host_page_html, host_page_html_with, host_page_html_with_transport, with_session,
    Driver, HostPage,
};
use chatty_tests::chat::Guest;
use chatty_tests::procs::ChattyUp;
use chatty_tests::scrape::route_requests;
use chatty_tests::stack::Stack;
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::elements::{Element, ElementRef};
use fantoccini::key::Key;
use fantoccini::{Client, Locator};
use std::time::{Duration, Instant};

mod chat;
mod moderation;
mod portal;
mod transports;
mod visitor;

const WAIT: Duration = Duration::from_secs(15);

/// Opens the widget on the current page and switches into its frame.
async fn open_widget(c: &Client) {
    let iframe = wait_js(
        c,
        "const host = document.querySelector('chatty-widget');
         if (!host || !host.shadowRoot) return null;
         const b = host.shadowRoot.querySelector('button.launcher');
         if (!b) return null;
         if (!host.shadowRoot.querySelector('iframe')) b.click();
         return host.shadowRoot.querySelector('iframe');",
    )
    .await;
    let id = iframe
        .as_object()
        .and_then(|o| o.values().next())
        .and_then(|v| v.as_str())
        .expect("an element reference")
        .to_owned();
    Element::from_element_id(c.clone(), ElementRef::from(id))
        .enter_frame()
        .await
        .expect("enter the chat frame");
}

/// Runs `script` until it returns something other than null/false.
async fn wait_js(c: &Client, script: &str) -> serde_json::Value {
    let start = std::time::Instant::now();
    loop {
        let v = c.execute(script, vec![]).await.expect("execute script");
        if !v.is_null() && v != serde_json::Value::Bool(false) {
            return v;
        }
        assert!(start.elapsed() < WAIT, "timed out waiting for: {script}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn find(c: &Client, css: &str) -> Element {
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
}

/// Picks a nickname in the frame (through the header's join button when
/// the dialog is not open yet) and waits for the dialog to close.
async fn join_as(c: &Client, nick: &str) {
    c.execute(
        "const d = document.getElementById('nick-dialog');
         if (d.hidden) document.getElementById('nick-change').click();
         return true;",
        vec![],
    )
    .await
    .expect("open the nickname dialog");
    let input = find(c, "#nick-input").await;
    input.send_keys(nick).await.expect("type nick");
    find(c, "#nick-submit").await.click().await.expect("join");
    wait_js(
        c,
        "const d = document.getElementById('nick-dialog'); return d && d.hidden;",
    )
    .await;
}

async fn say(c: &Client, text: &str) {
    let composer = find(c, "#composer").await;
    composer.send_keys(text).await.expect("type");
    composer
        .send_keys(&Key::Enter.to_string())
        .await
        .expect("enter");
}

/// Waits until a message with exactly `text` is in the list.
async fn wait_message(c: &Client, text: &str) {
    let script = format!(
        "return [...document.querySelectorAll('#messages li.message .text')].some(e => e.textContent === {});",
        serde_json::to_string(text).expect("json")
    );
    wait_js(c, &script).await;
}

async fn members(c: &Client) -> Vec<String> {
    let v = c
        .execute(
            "return [...document.querySelectorAll('#members li.member')].map(e => e.textContent.trim());",
            vec![],
        )
        .await
        .expect("members");
    serde_json::from_value(v).expect("member names")
}

async fn wait_member(c: &Client, nick: &str, present: bool) {
    let start = std::time::Instant::now();
    loop {
        let here = members(c).await.iter().any(|m| m.contains(nick));
        if here == present {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "{nick} present={here}, wanted {present}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `chatty site add --json` for `origin` against `up`: the new site's id and
/// the whole answer (its snippet and admin secret).
fn site_add(up: &ChattyUp, origin: &str) -> (String, serde_json::Value) {
    let out = up.chatty(&[
        "site",
        "add",
        "--origin",
        origin,
        "--public-url",
        &up.base,
        "--json",
    ]);
    let created: serde_json::Value = serde_json::from_str(&out).expect("site add --json");
    let site = created["site"]["id"].as_str().expect("site id").to_owned();
    (site, created)
}

// ---------------------------------------------------------------- transports

/// Records every request the frame makes through `fetch` from now on (all of
/// its requests but the leave beacon), with what was asked and answered, in
/// `window.__chattySent`.
const RECORD_FETCHES: &str = "
    if (!window.__chattySent) {
      const sent = (window.__chattySent = []);
      const orig = window.fetch;
      window.fetch = function (input, init) {
        const h = (init && init.headers) || {};
        const rec = {
          method: (init && init.method) || 'GET',
          url: String(input),
          accept: h.Accept || null,
          prefer: h.Prefer || null,
          status: null,
          type: null,
          applied: null,
        };
        sent.push(rec);
        const p = orig.apply(this, arguments);
        p.then((r) => {
          rec.status = r.status;
          rec.type = r.headers.get('Content-Type');
          rec.applied = r.headers.get('Preference-Applied');
        }, () => {});
        return p;
      };
    }
    return true;";

/// One request the frame made (see [`RECORD_FETCHES`]).
#[derive(Debug, serde::Deserialize)]
struct Sent {
    method: String,
    url: String,
    accept: Option<String>,
    prefer: Option<String>,
    status: Option<u16>,
    #[serde(rename = "type")]
    content_type: Option<String>,
    applied: Option<String>,
}

impl Sent {
    fn heartbeat(&self) -> bool {
        self.method == "POST" && self.url.ends_with("/heartbeat")
    }
    fn messages_get(&self) -> bool {
        self.method == "GET" && self.url.contains("/messages?after=")
    }
    /// An event stream asked for and answered as one.
    fn stream(&self) -> bool {
        self.messages_get()
            && self.accept.as_deref() == Some("text/event-stream")
            && self.status == Some(200)
            && self
                .content_type
                .as_deref()
                .is_some_and(|t| t.starts_with("text/event-stream"))
    }
    /// A poll that asked to be held.
    fn asked_to_wait(&self) -> bool {
        self.method == "GET" && self.prefer.is_some()
    }
    /// A poll that the edge held.
    fn held(&self) -> bool {
        self.asked_to_wait() && self.applied.is_some()
    }
}

async fn sent(c: &Client) -> Vec<Sent> {
    let v = c
        .execute("return window.__chattySent || [];", vec![])
        .await
        .expect("read the recorded requests");
    serde_json::from_value(v).expect("recorded requests")
}

// ---------------------------------------------------------------- the visitor's frame

/// True once `script` (a boolean expression) holds in the current frame.
async fn wait_true(c: &Client, expr: &str) {
    wait_js(c, &format!("return !!({expr});")).await;
}

/// Waits until a message with exactly `text` is confirmed (stored, with its
/// seq) in the list.
async fn wait_stored(c: &Client, text: &str) {
    let script = format!(
        "return [...document.querySelectorAll('#messages li.message[data-seq] .text')].some(e => e.textContent === {});",
        serde_json::to_string(text).expect("json")
    );
    wait_js(c, &script).await;
}

async fn text_of(c: &Client, expr: &str) -> String {
    let v = c
        .execute(&format!("return String({expr});"), vec![])
        .await
        .unwrap_or_else(|e| panic!("{expr}: {e}"));
    v.as_str().unwrap_or_default().to_owned()
}

/// Presses keys as a keyboard would, on whatever has the focus.
async fn press(c: &Client, keys: &str) {
    let mut actions = KeyActions::new("keyboard".into());
    for k in keys.chars() {
        actions = actions
            .then(KeyAction::Down { value: k })
            .then(KeyAction::Up { value: k });
    }
    c.perform_actions(actions).await.expect("key presses");
}

/// axe-core's serious and critical findings on the current frame's
/// document (axe is loaded into it first when it is not there yet).
async fn axe_findings(c: &Client, axe: &str) -> Vec<serde_json::Value> {
    let loaded = c
        .execute("return typeof window.axe === 'object';", vec![])
        .await
        .expect("look for axe");
    if loaded != serde_json::json!(true) {
        c.execute(&format!("{axe}\nreturn true;"), vec![])
            .await
            .expect("load axe-core");
    }
    let found = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, { resultTypes: ['violations'] }).then(
               (r) => done(r.violations
                 .filter((v) => v.impact === 'serious' || v.impact === 'critical')
                 .map((v) => ({ id: v.id, impact: v.impact, help: v.help,
                                nodes: v.nodes.map((n) => n.target.join(' ') + ': ' + (n.failureSummary || '')) }))),
               (e) => done([{ id: 'axe-error', help: String(e) }]));",
            vec![],
        )
        .await
        .expect("run axe-core");
    serde_json::from_value(found).expect("a list of findings")
}

async fn assert_accessible(c: &Client, axe: &str, when: &str) {
    let findings = axe_findings(c, axe).await;
    assert!(
        findings.is_empty(),
        "axe-core, {when}: {}",
        serde_json::to_string_pretty(&findings).expect("json")
    );
}

/// Types `nick` into the open nickname dialog and submits it; the dialog's
/// error text once it answers (empty when it closed).
async fn try_nick(c: &Client, nick: &str) -> String {
    c.execute(
        "const d = document.getElementById('nick-dialog');
         if (d.hidden) document.getElementById('nick-change').click();
         document.getElementById('nick-input').value = '';
         document.getElementById('nick-error').textContent = '';
         return true;",
        vec![],
    )
    .await
    .expect("open the nickname dialog");
    find(c, "#nick-input")
        .await
        .send_keys(nick)
        .await
        .expect("type nick");
    find(c, "#nick-submit").await.click().await.expect("submit");
    let answer = wait_js(
        c,
        "const d = document.getElementById('nick-dialog');
         const err = document.getElementById('nick-error').textContent;
         return d.hidden ? 'joined' : (err ? err : null);",
    )
    .await;
    match answer.as_str() {
        Some("joined") => String::new(),
        other => other.unwrap_or_default().to_owned(),
    }
}

/// Whether the message `text` on screen carries the verified mark.
async fn marked(c: &Client, text: &str) -> bool {
    let script = format!(
        "const li = [...document.querySelectorAll('#messages li.message')]
           .find(li => li.querySelector('.text') && li.querySelector('.text').textContent === {});
         return li ? (li.querySelector('.meta .verified') ? 'yes' : 'no') : null;",
        serde_json::to_string(text).expect("json")
    );
    wait_js(c, &script).await == "yes"
}

// ---------------------------------------------------------------- the site's rules in the frame

/// The texts of the messages confirmed (stored) on screen, in order.
async fn stored_texts(c: &Client) -> Vec<String> {
    let v = c
        .execute(
            "return [...document.querySelectorAll('#messages li.message[data-seq] .text')].map(e => e.textContent);",
            vec![],
        )
        .await
        .expect("stored texts");
    serde_json::from_value(v).expect("texts")
}

/// After a first message went out, a second is refused for a while (429
/// with `Retry-After`: a rate limit or slow mode): the send button counts
/// down, the status line starts with `status`, Enter keeps a third text in
/// the composer, and once the wait is over the second goes out by itself,
/// once. Answers the first count shown, in seconds.
async fn second_send_counts_down(c: &Client, status: &str) -> u32 {
    say(c, "second").await;
    wait_true(
        c,
        "document.getElementById('send').getAttribute('aria-disabled') === 'true'
         && Number(document.getElementById('send').dataset.wait) > 0",
    )
    .await;
    let first: u32 = text_of(c, "document.getElementById('send').dataset.wait")
        .await
        .parse()
        .expect("seconds");
    let label = text_of(c, "document.getElementById('send').textContent").await;
    assert!(label.starts_with("Wait "), "{label}");
    let shown = text_of(c, "document.getElementById('status').textContent").await;
    assert!(shown.starts_with(status), "{shown}");
    // Nothing more goes out meanwhile: Enter keeps the text.
    say(c, "third").await;
    assert_eq!(
        text_of(c, "document.getElementById('composer').value").await,
        "third"
    );
    if first > 1 {
        wait_true(
            c,
            &format!("Number(document.getElementById('send').dataset.wait || 0) < {first}"),
        )
        .await;
    }
    // When the wait is over, the same message goes out by itself.
    wait_stored(c, "second").await;
    wait_true(
        c,
        "!document.getElementById('send').hasAttribute('aria-disabled')
         && document.getElementById('send').textContent === 'Send'",
    )
    .await;
    assert_eq!(
        stored_texts(c).await,
        ["first", "second"],
        "sent once each, in order"
    );
    first
}

// ---------------------------------------------------------------- a moderator in the chat

/// Signs a user token for `site` with the Ed25519 `seed` registered as
/// `k1` (see [`add_user_key`]).
fn user_token(site: &str, seed: &[u8; 32], sub: &str, name: &str, roles: &[&str]) -> String {
    use chat_api::{sign_user_token, HostClaims, KeyAlg};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = HostClaims {
        aud: site.to_owned(),
        sub: sub.into(),
        name: name.into(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        iat: now,
        exp: now + 600,
        // Each token its own id: one is accepted once.
        jti: format!("view-{sub}-{now}-{}", rand::random::<u32>()),
    };
    sign_user_token(&claims, "k1", KeyAlg::Ed25519, seed)
}

/// Registers the Ed25519 public key of `seed` as the site's key `k1`.
async fn add_user_key(base: &str, site: &str, secret: &str, seed: &[u8; 32]) {
    let added = chatty_tests::http()
        .post(format!("{base}/v1/sites/{site}/user-keys"))
        .bearer_auth(secret)
        .json(&serde_json::json!({"kid": "k1", "alg": "ed25519", "key": chat_api::ed25519_public(seed)}))
        .send()
        .await
        .expect("add key");
    assert_eq!(added.status(), 201);
}

/// A free port on 127.0.0.1 and the `http://localhost:{port}` origin of it.
async fn free_origin() -> (u16, String) {
    let free = HostPage::serve("127.0.0.1", String::new()).await;
    let port: u16 = free
        .origin
        .rsplit(':')
        .next()
        .expect("port")
        .parse()
        .expect("port");
    drop(free);
    (port, format!("http://localhost:{port}"))
}

/// Clicks `#id` in the current frame.
async fn click(c: &Client, id: &str) {
    find(c, &format!("#{id}"))
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("click #{id}: {e}"));
}
