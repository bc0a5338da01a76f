//! Real headless Chromium against `chatty up`: two visitors chat through the
//! edge, user text stays text, only allowed origins can frame the chat,
//! history survives a reload, a leaver drops out, a site made with
//! `chatty site add` works on its own origin only, a banned guest keeps
//! reading the room but sends nothing more, and each way of reading the room
//! (event stream, held polls, 2-second polls) carries messages and presence,
//! with heartbeats only on plain polls.

use std::time::{Duration, Instant};

use chatty_tests::browser::{
    host_page_html, host_page_html_with_transport, with_session, Driver, HostPage,
};
use chatty_tests::chat::Guest;
use chatty_tests::procs::ChattyUp;
use chatty_tests::scrape::route_requests;
use chatty_tests::stack::Stack;
use fantoccini::elements::{Element, ElementRef};
use fantoccini::key::Key;
use fantoccini::{Client, Locator};

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

/// Picks a nickname in the frame (if asked) and waits for the composer.
async fn join_as(c: &Client, nick: &str) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_visitors_chat_through_the_edge_and_text_stays_text() {
    let up = ChattyUp::start().await;
    let driver = Driver::start().await;
    let demo = format!("{}/", up.base);
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("widget.png");

    let ada = driver.session("ada").await;
    ada.goto(&demo).await.expect("open demo page");
    open_widget(&ada).await;
    join_as(&ada, "ada").await;

    let demo2 = demo.clone();
    with_session(&driver, "bob", move |bob| async move {
        bob.goto(&demo2).await.expect("open demo page");
        open_widget(&bob).await;
        join_as(&bob, "<b>x</b>").await;
        say(&bob, "<img src=x onerror=alert(1)>").await;
        wait_message(&bob, "<img src=x onerror=alert(1)>").await;
        // Rendered as text: no element was made from it, no script ran (an
        // alert would make the next command fail with UnexpectedAlertOpen).
        let imgs = bob
            .execute(
                "return document.querySelectorAll('#messages img').length;",
                vec![],
            )
            .await
            .expect("no alert open");
        assert_eq!(imgs, serde_json::json!(0));
    })
    .await;

    wait_message(&ada, "<img src=x onerror=alert(1)>").await;
    let nicks = ada
        .execute(
            "return [...document.querySelectorAll('#messages li.message .nick')].map(e => e.textContent);",
            vec![],
        )
        .await
        .expect("nicks");
    assert!(
        nicks.to_string().contains("<b>x</b>"),
        "nick shown literally: {nicks}"
    );
    let bolds = ada
        .execute(
            "return document.querySelectorAll('#messages b, #members b').length;",
            vec![],
        )
        .await
        .expect("no alert open");
    assert_eq!(bolds, serde_json::json!(0));
    say(&ada, "hello bob").await;
    wait_message(&ada, "hello bob").await;

    ada.enter_parent_frame().await.expect("back to the page");
    let png = ada.screenshot().await.expect("screenshot");
    std::fs::write(&shot, png).expect("save screenshot");
    let _ = ada.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_history_and_leaving() {
    let up = ChattyUp::start().await;
    let driver = Driver::start().await;
    let frame = format!("{}/v1/sites/demo/rooms/members-test/frame", up.base);
    let host = HostPage::serve(
        "127.0.0.1",
        host_page_html(&up.base, "demo", "members-test"),
    )
    .await;

    let ada = driver.session("ada").await;
    ada.goto(&host.origin).await.expect("host page");
    open_widget(&ada).await;
    join_as(&ada, "ada").await;
    say(&ada, "remember me").await;
    wait_message(&ada, "remember me").await;

    let bob = driver.session("bob").await;
    bob.goto(&frame).await.expect("frame page");
    join_as(&bob, "bob").await;
    wait_member(&ada, "bob", true).await;
    wait_member(&bob, "ada", true).await;

    // Bob leaves (pagehide → leave): Ada's list drops him within seconds.
    bob.goto("about:blank").await.expect("leave");
    wait_member(&ada, "bob", false).await;

    // Ada reloads: the history is back.
    ada.refresh().await.expect("reload");
    open_widget(&ada).await;
    wait_message(&ada, "remember me").await;
    let _ = bob.close().await;
    let _ = ada.close().await;
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

/// True when the frame inside the widget rendered the chat (the composer).
async fn frame_renders_chat(c: &Client) -> bool {
    open_widget(c).await;
    // Give a refused frame time to settle into its error page.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let found = c
        .execute("return !!document.getElementById('composer');", vec![])
        .await
        .map(|v| v == serde_json::json!(true))
        .unwrap_or(false);
    let _ = c.enter_parent_frame().await;
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_origins_can_frame_the_chat() {
    let up = ChattyUp::start().await;
    let driver = Driver::start().await;
    // The demo site allows http://127.0.0.1 and http://localhost on any
    // port; 127.0.0.2 is another origin.
    let allowed = HostPage::serve("127.0.0.1", host_page_html(&up.base, "demo", "lobby")).await;
    let refused = HostPage::serve("127.0.0.2", host_page_html(&up.base, "demo", "lobby")).await;
    let c = driver.session("origins").await;
    c.goto(&allowed.origin).await.expect("allowed page");
    assert!(
        frame_renders_chat(&c).await,
        "an allowed origin must be able to frame the chat"
    );
    c.goto(&refused.origin).await.expect("refused page");
    assert!(
        !frame_renders_chat(&c).await,
        "a refused origin framed the chat"
    );
    let _ = c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_from_chatty_site_add_works_on_its_origin_only() {
    let up = ChattyUp::start().await;
    let driver = Driver::start().await;
    let page = HostPage::serve("127.0.0.1", String::new()).await;
    let port = page.origin.rsplit(':').next().expect("port").to_owned();
    drop(page);
    let allowed_origin = format!("http://localhost:{port}");
    let (site, created) = site_add(&up, &allowed_origin);
    let snippet = created["snippet"].as_str().expect("snippet").to_owned();
    assert!(
        snippet.contains(&site) && snippet.contains("/v1/widget.js"),
        "{snippet}"
    );
    let html = format!("<!doctype html><html><body><h1>owner page</h1>{snippet}</body></html>");
    // Serve the page on the same port the site was created for.
    let listener_ip = "127.0.0.1";
    let page = HostPage::serve_on(listener_ip, port.parse().expect("port"), html).await;
    let c = driver.session("site-add").await;
    c.goto(&allowed_origin)
        .await
        .expect("owner page on its origin");
    assert!(
        frame_renders_chat(&c).await,
        "the site's own origin must be able to frame its chat"
    );
    // The same page reached as http://127.0.0.1:port is another origin.
    c.goto(&page.origin)
        .await
        .expect("owner page on another origin");
    assert!(
        !frame_renders_chat(&c).await,
        "another origin framed the site's chat"
    );
    let _ = c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_guest_keeps_reading_but_sends_nothing_more() {
    let up = ChattyUp::start().await;
    let driver = Driver::start().await;
    let (site, created) = site_add(&up, "http://localhost:1");
    let secret = created["secret"].as_str().expect("site secret").to_owned();

    let ada = driver.session("banned").await;
    ada.goto(&format!("{}/v1/sites/{site}/rooms/ban-test/frame", up.base))
        .await
        .expect("frame page");
    join_as(&ada, "ada").await;
    say(&ada, "before the ban").await;
    wait_message(&ada, "before the ban").await;
    let me = wait_js(
        &ada,
        "const li = document.querySelector('#members li.me'); return li && li.dataset.id;",
    )
    .await;
    let banned = chatty_tests::http()
        .post(format!("{}/v1/sites/{site}/bans", up.base))
        .bearer_auth(&secret)
        .json(&serde_json::json!({ "member_id": me }))
        .send()
        .await
        .expect("ban");
    assert_eq!(banned.status(), 204, "ban: {:?}", banned.text().await);

    // The next send is refused: the frame says why, fails what it holds and
    // takes the composer away...
    say(&ada, "after the ban").await;
    wait_js(
        &ada,
        "const s = document.getElementById('status');
         return s.dataset.state === 'banned' && s.textContent.includes('You can still read this room')
           && document.getElementById('composer').disabled && document.getElementById('send').disabled;",
    )
    .await;
    let note = wait_js(
        &ada,
        "const n = document.querySelector('#messages li.failed .note'); return n && n.textContent;",
    )
    .await;
    assert!(
        note.as_str().is_some_and(|n| n.starts_with("Not sent.")),
        "{note}"
    );
    // ...and goes on reading the room.
    let bob = Guest::join(&up.base, &site, "ban-test", "bob").await;
    bob.send("still readable", "still-readable-1").await;
    wait_message(&ada, "still readable").await;
    let _ = ada.close().await;
}

// ---------------------------------------------------------------- transports

/// Presence TTL of the transport tests' API node: a guest nobody vouches for
/// (no heartbeat, no report from the edge) leaves the list this long after
/// joining.
const PRESENCE_TTL: Duration = Duration::from_secs(15);

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

/// Two visitors of a host page whose widget reads the room through `forced`
/// (None: the widget's choice) chat through an edge; the frames must say
/// they read it through `expect`. Past the presence TTL each still sees the
/// other; heartbeats went out only if `expect` is plain polling, and only
/// then did any reach the API node.
async fn chat_over(forced: Option<&'static str>, expect: &'static str) {
    let ttl = format!("{}s", PRESENCE_TTL.as_secs());
    let api_flags = [
        "--demo-site",
        "--presence-ttl",
        &ttl,
        "--guest-rate",
        "off",
        "--ip-rate",
        "off",
    ];
    let stack = Stack::start(1, &api_flags, &["--ip-rate", "off"]).await;
    let driver = Driver::start().await;
    let room = format!("transport-{expect}");
    let html = host_page_html_with_transport(&stack.edge.base, "demo", &room, forced);
    let host = HostPage::serve("127.0.0.1", html).await;
    let ada = driver.session("ada").await;
    let bob = driver.session("bob").await;
    let (a, b) = (ada.clone(), bob.clone());
    let origin = host.origin.clone();
    let steps = tokio::spawn(async move {
        for (c, nick) in [(&a, "ada"), (&b, "bob")] {
            c.goto(&origin).await.expect("host page");
            open_widget(c).await;
            c.execute(RECORD_FETCHES, vec![])
                .await
                .expect("record requests");
            join_as(c, nick).await;
        }
        let joined = Instant::now();
        for c in [&a, &b] {
            let used = wait_js(
                c,
                "return document.getElementById('app').dataset.transport;",
            )
            .await;
            assert_eq!(used, serde_json::json!(expect), "the frame's transport");
        }
        say(&b, &format!("hello ada, over {expect}")).await;
        wait_message(&a, &format!("hello ada, over {expect}")).await;
        say(&a, &format!("hello bob, over {expect}")).await;
        wait_message(&b, &format!("hello bob, over {expect}")).await;

        // Past the TTL, both are still here: kept by heartbeats on plain
        // polls, by the edge's reports on a stream or held polls.
        let past_ttl = PRESENCE_TTL + Duration::from_secs(5);
        tokio::time::sleep(past_ttl.saturating_sub(joined.elapsed())).await;
        wait_member(&a, "bob", true).await;
        wait_member(&b, "ada", true).await;

        for (c, nick) in [(&a, "ada"), (&b, "bob")] {
            let sent = sent(c).await;
            let heartbeats = sent.iter().filter(|s| s.heartbeat()).count();
            match expect {
                "stream" => {
                    assert!(
                        sent.iter().any(Sent::stream),
                        "{nick}: no event stream: {sent:?}"
                    );
                    assert!(
                        !sent.iter().any(Sent::asked_to_wait),
                        "{nick}: held polls: {sent:?}"
                    );
                }
                "hold" => {
                    assert!(
                        sent.iter().any(Sent::held),
                        "{nick}: no held poll: {sent:?}"
                    );
                    assert!(
                        !sent.iter().any(|s| s.accept.is_some()),
                        "{nick}: a stream: {sent:?}"
                    );
                }
                _ => {
                    assert!(
                        sent.iter().any(Sent::messages_get),
                        "{nick}: no poll: {sent:?}"
                    );
                    assert!(
                        !sent
                            .iter()
                            .any(|s| s.accept.is_some() || s.prefer.is_some()),
                        "{nick}: a stream or a held poll: {sent:?}"
                    );
                }
            }
            if expect == "poll" {
                assert!(heartbeats > 0, "{nick} sent no heartbeat on plain polls");
            } else {
                assert_eq!(heartbeats, 0, "{nick} sent heartbeats over {expect}");
            }
        }
    });
    let result = steps.await;
    let _ = ada.close().await;
    let _ = bob.close().await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
    // What reached the API node agrees with what the pages say they sent.
    let heartbeats = route_requests(stack.api(), "heartbeat").await;
    if expect == "poll" {
        assert!(heartbeats > 0.0, "no heartbeat reached the API node");
    } else {
        assert_eq!(
            heartbeats, 0.0,
            "heartbeats reached the API node over {expect}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_event_stream_carries_messages_and_presence_without_heartbeats() {
    chat_over(Some("stream"), "stream").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_held_polls_carry_messages_and_presence_without_heartbeats() {
    chat_over(Some("hold"), "hold").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_plain_polls_carry_messages_and_heartbeats_keep_presence() {
    chat_over(Some("poll"), "poll").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_widget_picks_the_event_stream_by_itself() {
    chat_over(None, "stream").await;
}
