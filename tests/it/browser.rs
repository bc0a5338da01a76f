//! Real headless Chromium against `chatty up`: two visitors chat through the
//! edge, user text stays text, only allowed origins can frame the chat,
//! history survives a reload, a leaver drops out, a site made with
//! `chatty site add` works on its own origin only, a banned guest keeps
//! reading the room but sends nothing more, and each way of reading the room
//! (event stream, held polls, 2-second polls) carries messages and presence,
//! with heartbeats only on plain polls. And the frame as a visitor meets it:
//! the room shown before any name is asked, the name asked on the first
//! send, keyboard-only use, its languages (German, Arabic laid out right to
//! left, the browser's own, English for an unknown one), no serious or
//! critical finding of axe-core, a refused send counted down on the button,
//! and its files compressed with validators through the edge. And a user
//! the host site signs in, marked as verified, whose name no guest takes;
//! the site's rules in the frame (a room's slow mode counted down, a blocked
//! word masked or refused); a moderator who times a guest out and deletes
//! the message from the chat, seen by another viewer, the timeout holding
//! across a new nickname and a reload; and the README's screenshot.

use std::time::{Duration, Instant};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_reads_the_room_at_once_and_is_asked_a_name_on_first_send() {
    let up = ChattyUp::start().await;
    let driver = Driver::start().await;
    let room = "read-first";
    let bob = Guest::join(&up.base, "demo", room, "bob").await;
    bob.send("hello from bob", "read-first-1").await;
    let host = HostPage::serve("127.0.0.1", host_page_html(&up.base, "demo", room)).await;
    with_session(&driver, "reader", move |c| async move {
        c.goto(&host.origin).await.expect("host page");
        open_widget(&c).await;
        // The conversation and who is here, with no name asked and no join.
        wait_message(&c, "hello from bob").await;
        wait_member(&c, "bob", true).await;
        wait_true(&c, "document.getElementById('member-count').dataset.count === '1'").await;
        wait_true(&c, "document.getElementById('app').dataset.transport").await;
        assert_eq!(
            text_of(&c, "document.getElementById('nick-dialog').hidden").await,
            "true",
            "a name was asked before the visitor wrote"
        );
        assert_eq!(text_of(&c, "document.getElementById('nick-change').textContent").await, "Join");
        assert_eq!(
            text_of(&c, "Object.keys(sessionStorage).filter(k => k.startsWith('chatty.session')).length").await,
            "0",
            "the frame joined by itself"
        );
        // New messages come as they are sent.
        bob.send("still talking", "read-first-2").await;
        wait_message(&c, "still talking").await;

        // The first send asks for the name; the message waits in the composer.
        say(&c, "hi bob").await;
        wait_true(
            &c,
            "!document.getElementById('nick-dialog').hidden && document.activeElement.id === 'nick-input'",
        )
        .await;
        assert_eq!(text_of(&c, "document.getElementById('composer').value").await, "hi bob");
        assert_eq!(text_of(&c, "document.getElementById('nick-submit').textContent").await, "Join and send");
        find(&c, "#nick-input").await.send_keys("ada").await.expect("type nick");
        press(&c, &Key::Enter.to_string()).await;
        // Joined, and the waiting message went out.
        wait_true(&c, "document.getElementById('nick-dialog').hidden").await;
        wait_stored(&c, "hi bob").await;
        assert_eq!(text_of(&c, "document.getElementById('composer').value").await, "");
        assert_eq!(text_of(&c, "document.querySelector('#nick-change .my-nick').textContent").await, "ada");
        wait_member(&c, "ada", true).await;
        wait_true(&c, "document.getElementById('member-count').dataset.count === '2'").await;
        // Asked once: the next message goes straight out.
        say(&c, "and again").await;
        wait_stored(&c, "and again").await;
        assert_eq!(text_of(&c, "document.getElementById('nick-dialog').hidden").await, "true");
        drop(bob);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyboard_only_a_visitor_tabs_to_the_composer_and_sends_with_enter() {
    let up = ChattyUp::start().await;
    let driver = Driver::start().await;
    let host = HostPage::serve("127.0.0.1", host_page_html(&up.base, "demo", "keys")).await;
    with_session(&driver, "keys", move |c| async move {
        c.goto(&host.origin).await.expect("host page");
        wait_true(
            &c,
            "document.querySelector('chatty-widget') && document.querySelector('chatty-widget').shadowRoot.querySelector('button.launcher')",
        )
        .await;
        // Tab reaches the launcher; Enter opens the chat.
        let mut tabs = 0;
        while text_of(
            &c,
            "document.activeElement.tagName === 'CHATTY-WIDGET' && document.activeElement.shadowRoot.activeElement && document.activeElement.shadowRoot.activeElement.className",
        )
        .await
        .split(' ')
        .all(|class| class != "launcher")
        {
            tabs += 1;
            assert!(tabs < 10, "Tab never reached the launcher");
            press(&c, &Key::Tab.to_string()).await;
        }
        press(&c, &Key::Enter.to_string()).await;
        open_widget(&c).await;
        // Inside the frame, Tab reaches the composer.
        wait_true(&c, "document.getElementById('app').dataset.transport").await;
        let mut tabs = 0;
        while text_of(&c, "document.activeElement && document.activeElement.id").await != "composer" {
            tabs += 1;
            assert!(tabs < 12, "Tab never reached the composer");
            press(&c, &Key::Tab.to_string()).await;
        }
        press(&c, "typed by keyboard").await;
        press(&c, &Key::Enter.to_string()).await;
        // The name dialog takes the focus; Enter joins and sends.
        wait_true(&c, "document.activeElement.id === 'nick-input'").await;
        press(&c, "kim").await;
        press(&c, &Key::Enter.to_string()).await;
        wait_stored(&c, "typed by keyboard").await;
        wait_true(&c, "document.activeElement.id === 'composer'").await;
        // Escape closes the chat, and the focus is back on the launcher.
        press(&c, &Key::Escape.to_string()).await;
        c.enter_parent_frame().await.expect("back to the page");
        wait_true(
            &c,
            "document.activeElement.tagName === 'CHATTY-WIDGET' && document.activeElement.shadowRoot.activeElement.classList.contains('launcher')",
        )
        .await;
        drop(host);
    })
    .await;
}

/// The rectangle of an element of the current frame: [left, right].
async fn span_of(c: &Client, id: &str) -> (f64, f64) {
    let v = c
        .execute(
            &format!("const r = document.getElementById('{id}').getBoundingClientRect(); return [r.left, r.right];"),
            vec![],
        )
        .await
        .expect("rect");
    let pair: (f64, f64) = serde_json::from_value(v).expect("two numbers");
    pair
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_arabic_widget_lays_out_right_to_left() {
    let up = ChattyUp::start().await;
    let driver = Driver::start().await;
    let html = host_page_html_with(&up.base, "demo", "rtl", &[("lang", "ar")]);
    let host = HostPage::serve("127.0.0.1", html).await;
    with_session(&driver, "arabic", move |c| async move {
        c.goto(&host.origin).await.expect("host page");
        // The launcher sits on the left, and speaks Arabic.
        let launcher = c
            .execute(
                "const b = document.querySelector('chatty-widget').shadowRoot.querySelector('button.launcher');
                 const r = b.getBoundingClientRect();
                 return [b.getAttribute('aria-label'), r.left < innerWidth / 2];",
                vec![],
            )
            .await
            .expect("launcher");
        assert_eq!(launcher, serde_json::json!(["الدردشة", true]));
        open_widget(&c).await;
        wait_true(&c, "document.getElementById('app').dataset.transport").await;
        assert_eq!(text_of(&c, "document.documentElement.dir").await, "rtl");
        assert_eq!(text_of(&c, "document.documentElement.lang").await, "ar");
        assert_eq!(text_of(&c, "getComputedStyle(document.getElementById('composer')).direction").await, "rtl");
        assert_eq!(text_of(&c, "document.querySelector('label[for=composer]').textContent").await, "الرسالة");
        assert_eq!(text_of(&c, "document.getElementById('composer').placeholder").await, "اكتب رسالة…");
        assert_eq!(text_of(&c, "document.getElementById('send').textContent").await, "إرسال");
        assert_eq!(text_of(&c, "document.getElementById('nick-change').textContent").await, "انضم");
        // The send button is on the left of the input.
        let (_, send_right) = span_of(&c, "send").await;
        let (composer_left, _) = span_of(&c, "composer").await;
        assert!(
            send_right <= composer_left + 1.0,
            "send button ends at {send_right}, the input starts at {composer_left}"
        );
        // The dialog speaks Arabic too.
        say(&c, "مرحبا").await;
        wait_true(&c, "!document.getElementById('nick-dialog').hidden").await;
        assert_eq!(text_of(&c, "document.getElementById('nick-title').textContent").await, "اختر اسمًا مستعارًا");
        assert_eq!(text_of(&c, "document.getElementById('nick-submit').textContent").await, "انضم وأرسل");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_widget_speaks_data_lang_else_the_browsers_language_else_english() {
    let up = ChattyUp::start().await;
    let driver = Driver::start().await;
    let german = HostPage::serve(
        "127.0.0.1",
        host_page_html_with(&up.base, "demo", "sprachen", &[("lang", "de")]),
    )
    .await;
    let unknown = HostPage::serve(
        "127.0.0.1",
        host_page_html_with(&up.base, "demo", "sprachen", &[("lang", "it")]),
    )
    .await;
    let frame = format!("{}/v1/sites/demo/rooms/sprachen/frame", up.base);
    // A browser that prefers French.
    let client = driver.session_in("languages", Some("fr-FR,fr")).await;
    let c = client.clone();
    let steps = tokio::spawn(async move {
        c.goto(&german.origin).await.expect("German page");
        open_widget(&c).await;
        wait_true(&c, "document.getElementById('app').dataset.transport").await;
        assert_eq!(text_of(&c, "document.documentElement.lang").await, "de");
        assert_eq!(text_of(&c, "document.documentElement.dir").await, "ltr");
        assert_eq!(
            text_of(&c, "document.getElementById('send').textContent").await,
            "Senden"
        );
        assert_eq!(
            text_of(&c, "document.getElementById('composer').placeholder").await,
            "Nachricht schreiben…"
        );
        assert_eq!(
            text_of(&c, "document.getElementById('empty').textContent").await,
            "Noch keine Nachrichten. Sag Hallo!"
        );
        assert_eq!(
            text_of(&c, "document.getElementById('nick-change').textContent").await,
            "Mitmachen"
        );
        wait_true(
            &c,
            "document.getElementById('member-count').textContent === '0 anwesend'",
        )
        .await;
        assert!(
            text_of(&c, "document.getElementById('composer-hint').textContent")
                .await
                .starts_with("Eingabetaste zum Senden")
        );
        c.enter_parent_frame().await.expect("back to the page");
        let title = text_of(
            &c,
            "document.querySelector('chatty-widget').shadowRoot.querySelector('iframe').title",
        )
        .await;
        assert_eq!(title, "Chat: sprachen");

        // No data-lang: the browser's language.
        c.goto(&frame).await.expect("the frame alone");
        wait_true(&c, "document.getElementById('app').dataset.transport").await;
        assert_eq!(text_of(&c, "navigator.languages[0]").await, "fr-FR");
        assert_eq!(text_of(&c, "document.documentElement.lang").await, "fr");
        assert_eq!(
            text_of(&c, "document.getElementById('send').textContent").await,
            "Envoyer"
        );

        // A language the widget does not speak: English.
        c.goto(&unknown.origin).await.expect("Italian page");
        open_widget(&c).await;
        wait_true(&c, "document.getElementById('app').dataset.transport").await;
        assert_eq!(text_of(&c, "document.documentElement.lang").await, "en");
        assert_eq!(
            text_of(&c, "document.getElementById('send').textContent").await,
            "Send"
        );
        drop((german, unknown));
    });
    let result = steps.await;
    let _ = client.close().await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
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

/// The frame in `lang`, checked by axe-core as a visitor goes through it:
/// reading before joining, the name dialog, joined with messages, and the
/// host page with the widget open.
async fn frame_is_accessible(lang: &'static str) {
    let up = ChattyUp::start().await;
    let driver = Driver::start().await;
    let room = format!("axe-{lang}");
    let bob = Guest::join(&up.base, "demo", &room, "bob").await;
    bob.send("a message to check", "axe-1").await;
    let html = host_page_html_with(&up.base, "demo", &room, &[("lang", lang)]);
    let host = HostPage::serve("127.0.0.1", html).await;
    let axe = axe_source();
    with_session(&driver, lang, move |c| async move {
        c.goto(&host.origin).await.expect("host page");
        open_widget(&c).await;
        wait_message(&c, "a message to check").await;
        wait_member(&c, "bob", true).await;
        assert_accessible(&c, &axe, "reading before joining").await;
        say(&c, "hello").await;
        wait_true(&c, "!document.getElementById('nick-dialog').hidden").await;
        assert_accessible(&c, &axe, "the name dialog").await;
        find(&c, "#nick-input")
            .await
            .send_keys("ann")
            .await
            .expect("type nick");
        press(&c, &Key::Enter.to_string()).await;
        wait_stored(&c, "hello").await;
        bob.send("an answer", "axe-2").await;
        wait_message(&c, "an answer").await;
        assert_accessible(&c, &axe, "joined, with messages").await;
        c.enter_parent_frame().await.expect("back to the page");
        assert_accessible(&c, &axe, "the host page with the widget open").await;
        drop(bob);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axe_core_finds_nothing_serious_in_the_english_frame() {
    frame_is_accessible("en").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axe_core_finds_nothing_serious_in_the_arabic_frame() {
    frame_is_accessible("ar").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_send_counts_down_on_the_button_then_goes_out() {
    // One message per guest every 6 s: the second is refused with
    // 429 rate_limited and Retry-After (slow mode answers the same way and
    // takes the same path in the frame).
    let api_flags = ["--demo-site", "--guest-rate", "1/6s", "--ip-rate", "off"];
    let stack = Stack::start(1, &api_flags, &["--ip-rate", "off"]).await;
    let driver = Driver::start().await;
    let html = host_page_html(&stack.edge.base, "demo", "countdown");
    let host = HostPage::serve("127.0.0.1", html).await;
    with_session(&driver, "countdown", move |c| async move {
        c.goto(&host.origin).await.expect("host page");
        open_widget(&c).await;
        join_as(&c, "ada").await;
        say(&c, "first").await;
        wait_stored(&c, "first").await;
        say(&c, "second").await;
        // The button counts down, the status line says why.
        wait_true(
            &c,
            "document.getElementById('send').getAttribute('aria-disabled') === 'true'
             && Number(document.getElementById('send').dataset.wait) > 0",
        )
        .await;
        let first = text_of(&c, "document.getElementById('send').dataset.wait").await;
        let label = text_of(&c, "document.getElementById('send').textContent").await;
        assert!(label.starts_with("Wait "), "{label}");
        let status = text_of(&c, "document.getElementById('status').textContent").await;
        assert!(
            status.starts_with("You are sending messages too fast. You can send again in"),
            "{status}"
        );
        // Nothing more goes out meanwhile: Enter keeps the text.
        say(&c, "third").await;
        assert_eq!(text_of(&c, "document.getElementById('composer').value").await, "third");
        let first: u32 = first.parse().expect("seconds");
        if first > 1 {
            wait_true(
                &c,
                &format!("Number(document.getElementById('send').dataset.wait || 0) < {first}"),
            )
            .await;
        }
        // When the wait is over, the same message goes out by itself.
        wait_stored(&c, "second").await;
        wait_true(
            &c,
            "!document.getElementById('send').hasAttribute('aria-disabled')
             && document.getElementById('send').textContent === 'Send'",
        )
        .await;
        let stored = text_of(
            &c,
            "[...document.querySelectorAll('#messages li.message[data-seq] .text')].map(e => e.textContent).join('|')",
        )
        .await;
        assert_eq!(stored, "first|second", "sent once each, in order");
        drop(host);
    })
    .await;
    drop(stack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_serves_the_widget_compressed_with_its_validators() {
    let up = ChattyUp::start().await;
    let http = chatty_tests::http();
    let frame_page = http
        .get(format!("{}/v1/sites/demo/rooms/lobby/frame", up.base))
        .send()
        .await
        .expect("frame")
        .text()
        .await
        .expect("frame page");
    let start = frame_page
        .find("/v1/frame.js?v=")
        .expect("versioned script");
    let end = start + frame_page[start..].find('"').expect("end of address");
    let paths = [
        "/v1/widget.js".to_owned(),
        frame_page[start..end].to_owned(),
        "/v1/sites/demo/rooms/lobby/frame".to_owned(),
    ];
    for path in paths {
        let url = format!("{}{path}", up.base);
        let plain = http.get(&url).send().await.expect("plain");
        assert_eq!(plain.status(), 200, "{path}");
        assert!(plain.headers().get("content-encoding").is_none(), "{path}");
        let plain_len = plain.bytes().await.expect("body").len();
        let gz = http
            .get(&url)
            .header("accept-encoding", "gzip")
            .send()
            .await
            .expect("gzip");
        assert_eq!(gz.status(), 200);
        let h = gz.headers().clone();
        assert_eq!(h["content-encoding"], "gzip", "{path}");
        assert_eq!(h["vary"], "Accept-Encoding", "{path}");
        let etag = h["etag"].to_str().expect("etag").to_owned();
        assert!(etag.starts_with('"'), "a strong ETag: {etag}");
        let body = gz.bytes().await.expect("body");
        assert_eq!(&body[..2], [0x1f, 0x8b], "{path}: a gzip stream");
        assert!(body.len() < plain_len, "{path}: smaller");
        let again = http
            .get(&url)
            .header("accept-encoding", "gzip")
            .header("if-none-match", &etag)
            .send()
            .await
            .expect("revalidate");
        assert_eq!(again.status(), 304, "{path}");
        assert_eq!(again.headers()["etag"], etag.as_str());
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_user_is_marked_and_a_guest_can_neither_look_verified_nor_take_the_name() {
    use chat_api::{ed25519_public, sign_user_token, HostClaims, KeyAlg};
    const SEED: [u8; 32] = [5; 32];
    let up = ChattyUp::start().await;
    let driver = Driver::start().await;
    let free = HostPage::serve("127.0.0.1", String::new()).await;
    let port = free.origin.rsplit(':').next().expect("port").to_owned();
    drop(free);
    let origin = format!("http://localhost:{port}");
    let (site, created) = site_add(&up, &origin);
    let secret = created["secret"].as_str().expect("site secret").to_owned();
    let added = chatty_tests::http()
        .post(format!("{}/v1/sites/{site}/user-keys", up.base))
        .bearer_auth(&secret)
        .json(&serde_json::json!({"kid": "k1", "alg": "ed25519", "key": ed25519_public(&SEED)}))
        .send()
        .await
        .expect("add key");
    assert_eq!(added.status(), 201);
    // The host site's backend signs a token for its user Ann.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = HostClaims {
        aud: site.clone(),
        sub: "42".into(),
        name: "Ann Editor".into(),
        roles: vec![],
        iat: now,
        exp: now + 600,
        jti: "page-view-1".into(),
    };
    let token = sign_user_token(&claims, "k1", KeyAlg::Ed25519, &SEED);
    let html = host_page_html_with(&up.base, &site, "front", &[("user-token", &token)]);
    let _page = HostPage::serve_on("127.0.0.1", port.parse().expect("port"), html).await;

    let ann = driver.session("verified").await;
    ann.goto(&origin).await.expect("the host page");
    open_widget(&ann).await;
    // Signed in at once, with the site's name and the mark; never asked.
    wait_js(
        &ann,
        "const me = document.querySelector('#members li.me');
         return me && me.querySelector('.verified') && me.textContent.includes('Ann Editor')
           && document.getElementById('nick-dialog').hidden;",
    )
    .await;
    say(&ann, "from the editor").await;
    wait_message(&ann, "from the editor").await;

    let bob = driver.session("guest").await;
    bob.goto(&format!("{}/v1/sites/{site}/rooms/front/frame", up.base))
        .await
        .expect("frame page");
    wait_message(&bob, "from the editor").await;
    assert!(
        marked(&bob, "from the editor").await,
        "the editor's message is marked"
    );
    // The guest cannot take the name, nor a check mark.
    for copy in ["Ann Editor", "ann.editor", "Bob \u{2714}"] {
        let err = try_nick(&bob, copy).await;
        assert!(!err.is_empty(), "{copy} was accepted");
    }
    assert_eq!(try_nick(&bob, "Bob").await, "", "a free name is taken");
    say(&bob, "hello from a guest").await;
    wait_message(&ann, "hello from a guest").await;
    assert!(
        !marked(&ann, "hello from a guest").await,
        "a guest's message is not marked"
    );
    let members = members(&ann).await;
    assert_eq!(members.len(), 2, "{members:?}");
    let _ = ann.close().await;
    let _ = bob.close().await;
}

// ---------------------------------------------------------------- the site's rules in the frame

/// `PUT {base}{path}` with the site secret and a JSON body; the answer's
/// status must be 200.
async fn put_with_secret(base: &str, path: &str, secret: &str, body: serde_json::Value) {
    let res = chatty_tests::http()
        .put(format!("{base}{path}"))
        .bearer_auth(secret)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT {path}: {e}"));
    let status = res.status();
    assert_eq!(status, 200, "PUT {path}: {:?}", res.text().await);
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rooms_slow_mode_counts_down_on_the_send_button() {
    let up = ChattyUp::start().await;
    let driver = Driver::start().await;
    let (site, created) = site_add(&up, "http://localhost:1");
    let secret = created["secret"].as_str().expect("site secret").to_owned();
    let room = "slow";
    put_with_secret(
        &up.base,
        &format!("/v1/sites/{site}/rooms/{room}/slow-mode"),
        &secret,
        serde_json::json!({ "secs": 5 }),
    )
    .await;
    let frame = format!("{}/v1/sites/{site}/rooms/{room}/frame", up.base);
    with_session(&driver, "slow-mode", move |c| async move {
        c.goto(&frame).await.expect("frame page");
        join_as(&c, "ada").await;
        say(&c, "first").await;
        wait_stored(&c, "first").await;
        say(&c, "second").await;
        // Refused with 429 slow_mode: the button counts down, the status says why.
        wait_true(
            &c,
            "document.getElementById('send').getAttribute('aria-disabled') === 'true'
             && Number(document.getElementById('send').dataset.wait) > 0",
        )
        .await;
        let first: u32 = text_of(&c, "document.getElementById('send').dataset.wait")
            .await
            .parse()
            .expect("seconds");
        assert!((1..=5).contains(&first), "{first}");
        let label = text_of(&c, "document.getElementById('send').textContent").await;
        assert!(label.starts_with("Wait "), "{label}");
        let status = text_of(&c, "document.getElementById('status').textContent").await;
        assert!(
            status.starts_with("Slow mode is on in this room. You can send again in"),
            "{status}"
        );
        // Enter does nothing meanwhile: the text stays in the composer.
        say(&c, "third").await;
        assert_eq!(
            text_of(&c, "document.getElementById('composer').value").await,
            "third"
        );
        if first > 1 {
            wait_true(
                &c,
                &format!("Number(document.getElementById('send').dataset.wait || 0) < {first}"),
            )
            .await;
        }
        // Once the period is over the waiting message goes out by itself.
        wait_stored(&c, "second").await;
        wait_true(
            &c,
            "!document.getElementById('send').hasAttribute('aria-disabled')
             && document.getElementById('send').textContent === 'Send'",
        )
        .await;
        assert_eq!(stored_texts(&c).await, ["first", "second"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_word_is_masked_or_refused_as_the_site_chose() {
    let up = ChattyUp::start().await;
    let driver = Driver::start().await;
    let (site, created) = site_add(&up, "http://localhost:1");
    let secret = created["secret"].as_str().expect("site secret").to_owned();
    let rules = format!("/v1/sites/{site}/rules");
    put_with_secret(
        &up.base,
        &rules,
        &secret,
        serde_json::json!({ "blocked_words": ["darn"], "action": "mask" }),
    )
    .await;
    let frame = format!("{}/v1/sites/{site}/rooms/words/frame", up.base);
    let reader = driver.session("words-reader").await;
    reader.goto(&frame).await.expect("frame page");
    let ada = driver.session("words-writer").await;
    ada.goto(&frame).await.expect("frame page");
    join_as(&ada, "ada").await;

    // Masked: stored with stars, and so shown to the writer and to a reader.
    say(&ada, "well Darn it").await;
    wait_stored(&ada, "well **** it").await;
    wait_message(&reader, "well **** it").await;
    assert!(
        !stored_texts(&reader)
            .await
            .iter()
            .any(|t| t.contains("arn")),
        "the word reached a reader"
    );

    // Refused: the reason is shown, nothing is stored, the text is kept.
    put_with_secret(
        &up.base,
        &rules,
        &secret,
        serde_json::json!({ "blocked_words": ["darn"], "action": "refuse" }),
    )
    .await;
    say(&ada, "darn again").await;
    let note = wait_js(
        &ada,
        "const n = document.querySelector('#messages li.failed .note'); return n && n.textContent;",
    )
    .await;
    assert!(
        note.as_str()
            .is_some_and(|n| n
                .starts_with("Not sent: That message contains words this chat does not allow.")),
        "{note}"
    );
    assert_eq!(
        text_of(&ada, "document.getElementById('composer').value").await,
        "darn again",
        "the refused text is given back to the composer"
    );
    // The reader never got the refused text; a clean message still goes out.
    ada.execute(
        "document.getElementById('composer').value = ''; return true;",
        vec![],
    )
    .await
    .expect("clear composer");
    say(&ada, "all good").await;
    wait_message(&reader, "all good").await;
    assert_eq!(stored_texts(&reader).await, ["well **** it", "all good"]);
    let _ = ada.close().await;
    let _ = reader.close().await;
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

/// Clicks the moderation button of the message `text` (a moderator's frame).
async fn moderate_message(c: &Client, text: &str) {
    let script = format!(
        "const li = [...document.querySelectorAll('#messages li.message[data-seq]')]
           .find(li => li.querySelector('.text') && li.querySelector('.text').textContent === {});
         const b = li && li.querySelector('button.mod-button');
         if (!b) return false;
         b.click();
         return !document.getElementById('mod-dialog').hidden;",
        serde_json::to_string(text).expect("json")
    );
    wait_js(c, &script).await;
}

/// Clicks `#id` in the current frame.
async fn click(c: &Client, id: &str) {
    find(c, &format!("#{id}"))
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("click #{id}: {e}"));
}

/// The texts of the moderation lines on screen, in order.
async fn moderation_lines(c: &Client) -> Vec<String> {
    let v = c
        .execute(
            "return [...document.querySelectorAll('#messages li.system .system-text')].map(e => e.textContent);",
            vec![],
        )
        .await
        .expect("moderation lines");
    serde_json::from_value(v).expect("lines")
}

async fn wait_moderation_line(c: &Client, line: &str) {
    let script = format!(
        "return [...document.querySelectorAll('#messages li.system .system-text')].some(e => e.textContent === {});",
        serde_json::to_string(line).expect("json")
    );
    wait_js(c, &script).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderator_times_a_guest_out_and_deletes_the_message_from_the_chat() {
    const SEED: [u8; 32] = [9; 32];
    let up = ChattyUp::start().await;
    let driver = Driver::start().await;
    let (port, origin) = free_origin().await;
    let (site, created) = site_add(&up, &origin);
    let secret = created["secret"].as_str().expect("site secret").to_owned();
    add_user_key(&up.base, &site, &secret, &SEED).await;
    let room = "moderated";
    let token = user_token(&site, &SEED, "7", "Mo", &["moderator"]);
    let html = host_page_html_with(&up.base, &site, room, &[("user-token", &token)]);
    let _page = HostPage::serve_on("127.0.0.1", port, html).await;
    let frame = format!("{}/v1/sites/{site}/rooms/{room}/frame", up.base);
    let axe = axe_source();

    let bob = driver.session("mod-bob").await;
    bob.goto(&frame).await.expect("frame page");
    join_as(&bob, "bob").await;
    let cat = driver.session("mod-cat").await;
    cat.goto(&frame).await.expect("frame page");
    join_as(&cat, "cat").await;
    // A guest's frame draws no moderator's controls.
    assert_eq!(
        text_of(
            &bob,
            "document.querySelectorAll('.mod-button').length + ':' + document.getElementById('slow-mode').hidden"
        )
        .await,
        "0:true"
    );

    let mo = driver.session("mod-mo").await;
    mo.goto(&origin).await.expect("the host page");
    open_widget(&mo).await;
    wait_true(
        &mo,
        "document.getElementById('app').classList.contains('moderating')
         && !document.getElementById('slow-mode').hidden
         && document.querySelectorAll('#members li.member button.mod-button').length === 2",
    )
    .await;

    say(&bob, "buy cheap stuff").await;
    wait_stored(&bob, "buy cheap stuff").await;
    wait_message(&mo, "buy cheap stuff").await;
    wait_message(&cat, "buy cheap stuff").await;
    assert_accessible(&mo, &axe, "a moderator's frame with its controls").await;

    // By keyboard: the message's button opens the dialog on its first action,
    // Escape closes it and gives the focus back.
    mo.execute(
        "document.querySelector('#messages li.message[data-seq]:not(.own) button.mod-button').focus(); return true;",
        vec![],
    )
    .await
    .expect("focus the button");
    press(&mo, &Key::Enter.to_string()).await;
    wait_true(
        &mo,
        "!document.getElementById('mod-dialog').hidden && document.activeElement.id === 'mod-delete'",
    )
    .await;
    assert_accessible(&mo, &axe, "a moderator's dialog").await;
    press(&mo, &Key::Escape.to_string()).await;
    wait_true(
        &mo,
        "document.getElementById('mod-dialog').hidden
         && document.activeElement.classList.contains('mod-button')",
    )
    .await;

    // Time bob out for 10 minutes, confirmed first.
    moderate_message(&mo, "buy cheap stuff").await;
    mo.execute(
        "document.getElementById('mod-duration').value = '600'; return true;",
        vec![],
    )
    .await
    .expect("choose 10 minutes");
    click(&mo, "mod-timeout").await;
    wait_true(&mo, "!document.getElementById('mod-confirm').hidden").await;
    assert_eq!(
        text_of(&mo, "document.getElementById('mod-question').textContent").await,
        "Time bob out for 10 minutes? Until then they can read but not write."
    );
    assert_accessible(&mo, &axe, "a moderator's confirmation").await;
    click(&mo, "mod-yes").await;
    wait_true(&mo, "document.getElementById('mod-dialog').hidden").await;
    wait_moderation_line(&mo, "Mo timed bob out for 10 minutes.").await;

    // Delete the message, confirmed first.
    moderate_message(&mo, "buy cheap stuff").await;
    click(&mo, "mod-delete").await;
    wait_true(&mo, "!document.getElementById('mod-confirm').hidden").await;
    click(&mo, "mod-yes").await;
    wait_true(&mo, "document.getElementById('mod-dialog').hidden").await;
    let gone = "![...document.querySelectorAll('#messages li.message .text')].some(e => e.textContent === 'buy cheap stuff')";
    wait_true(&mo, gone).await;

    // Another viewer sees the deletion and the line; bob sees it addressed to him.
    wait_true(&cat, gone).await;
    wait_moderation_line(&cat, "Mo timed bob out for 10 minutes.").await;
    wait_true(&bob, gone).await;
    wait_moderation_line(&bob, "Mo timed you out for 10 minutes.").await;

    // Bob's next send is refused with the reason, and counted down.
    say(&bob, "let me speak").await;
    let note = wait_js(
        &bob,
        "const n = document.querySelector('#messages li.failed .note'); return n && n.textContent;",
    )
    .await;
    assert!(
        note.as_str()
            .is_some_and(|n| n.starts_with("Not sent: A moderator has timed you out.")),
        "{note}"
    );
    wait_true(
        &bob,
        "document.getElementById('send').getAttribute('aria-disabled') === 'true'
         && Number(document.getElementById('send').dataset.wait) > 500",
    )
    .await;
    let status = text_of(&bob, "document.getElementById('status').textContent").await;
    assert!(
        status.starts_with("A moderator has timed you out. You can send again in"),
        "{status}"
    );
    assert_eq!(
        text_of(&bob, "document.getElementById('composer').value").await,
        "let me speak",
        "the refused text is given back"
    );
    assert!(
        !stored_texts(&cat).await.iter().any(|t| t == "let me speak"),
        "a timed-out guest's message reached another viewer"
    );
    // A new nickname in the same tab is the same member: still timed out.
    assert_eq!(try_nick(&bob, "bobby").await, "");
    let timed_out =
        "document.getElementById('status').textContent.startsWith('A moderator has timed you out.')
         && document.getElementById('send').getAttribute('aria-disabled') === 'true'";
    wait_true(&bob, timed_out).await;
    assert_eq!(
        text_of(
            &bob,
            "document.querySelector('#nick-change .my-nick').textContent"
        )
        .await,
        "bob",
        "the new nickname was refused"
    );
    // So is the tab reloaded: it joins again with its last token.
    bob.refresh().await.expect("reload");
    wait_true(&bob, timed_out).await;
    assert!(
        !members(&cat).await.iter().any(|m| m.contains("bobby")),
        "the timed-out guest joined under a new name"
    );

    // Slow mode from the moderator's button: every viewer is told, and a
    // guest's second message waits on a counted-down button.
    click(&mo, "slow-mode").await;
    wait_true(
        &mo,
        "!document.getElementById('mod-room').hidden && document.activeElement.id === 'mod-slow'",
    )
    .await;
    mo.execute(
        "document.getElementById('mod-slow').value = '5'; return true;",
        vec![],
    )
    .await
    .expect("choose 5 seconds");
    click(&mo, "mod-apply").await;
    wait_true(&mo, "document.getElementById('mod-dialog').hidden").await;
    let slow_line = "Mo turned slow mode on: one message every 5 seconds.";
    wait_moderation_line(&cat, slow_line).await;
    wait_true(
        &mo,
        "document.getElementById('slow-mode').getAttribute('aria-pressed') === 'true'",
    )
    .await;
    say(&cat, "one").await;
    wait_stored(&cat, "one").await;
    say(&cat, "two").await;
    wait_true(
        &cat,
        "document.getElementById('send').getAttribute('aria-disabled') === 'true'
         && Number(document.getElementById('send').dataset.wait) > 0",
    )
    .await;
    wait_stored(&cat, "two").await;
    assert_eq!(
        moderation_lines(&cat).await,
        ["Mo timed bob out for 10 minutes.", slow_line]
    );
    for c in [mo, bob, cat] {
        let _ = c.close().await;
    }
}

/// `POST {base}{path}` with a bearer token and a JSON body: the answer's
/// JSON, which must come with a 2xx status.
async fn post_json(
    base: &str,
    path: &str,
    token: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let res = chatty_tests::http()
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = res.status();
    let text = res.text().await.expect("answer");
    assert!(status.is_success(), "POST {path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

/// A user of the host site joined through the API with a user token: its
/// guest token.
async fn join_user(base: &str, site: &str, room: &str, user_token: &str) -> String {
    let res = chatty_tests::http()
        .post(format!("{base}/v1/sites/{site}/rooms/{room}/join"))
        .json(&serde_json::json!({ "user_token": user_token }))
        .send()
        .await
        .expect("join");
    assert_eq!(res.status(), 200);
    let joined: serde_json::Value = res.json().await.expect("join answer");
    joined["token"].as_str().expect("token").to_owned()
}

/// The scene of the README's screenshot (docs/moderation.png, copied from
/// the test's target directory): a portal's article page with the widget
/// open for its moderator, a verified editor and guests in the room, a
/// timeout and slow mode in the log, and the moderator's controls drawn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderators_view_with_a_verified_user_for_the_readme() {
    const SEED: [u8; 32] = [11; 32];
    let up = ChattyUp::start().await;
    let driver = Driver::start().await;
    let (port, origin) = free_origin().await;
    let (site, created) = site_add(&up, &origin);
    let secret = created["secret"].as_str().expect("site secret").to_owned();
    add_user_key(&up.base, &site, &secret, &SEED).await;
    let room = "tram";
    let base = format!("/v1/sites/{site}/rooms/{room}");
    let send = |token: String, text: &'static str, cid: &'static str| {
        let (api, path) = (up.base.clone(), format!("{base}/messages"));
        async move {
            post_json(
                &api,
                &path,
                &token,
                serde_json::json!({ "text": text, "client_id": cid }),
            )
            .await
        }
    };

    let ann = join_user(
        &up.base,
        &site,
        room,
        &user_token(&site, &SEED, "12", "Ann Editor", &[]),
    )
    .await;
    let mo_api = join_user(
        &up.base,
        &site,
        room,
        &user_token(&site, &SEED, "7", "Mo", &["moderator"]),
    )
    .await;
    let bob = Guest::join(&up.base, &site, room, "bob").await;
    let spam = Guest::join(&up.base, &site, room, "deals4u").await;
    send(
        ann.clone(),
        "Welcome! Tonight's council vote, live. Please keep it civil.",
        "s1",
    )
    .await;
    bob.send("Will the new tram run on Sundays too?", "s2")
        .await;
    let junk = spam.send("cheap followers, just DM me", "s3").await;
    let moderation = format!("{base}/moderation");
    post_json(
        &up.base,
        &moderation,
        &mo_api,
        serde_json::json!({"action": "timeout", "member_id": spam.joined.member.id, "secs": 600}),
    )
    .await;
    let deleted = chatty_tests::http()
        .delete(format!("{}{base}/messages/{}", up.base, junk.seq))
        .bearer_auth(&mo_api)
        .send()
        .await
        .expect("delete");
    assert!(
        deleted.status().is_success(),
        "delete: {}",
        deleted.status()
    );
    send(
        ann.clone(),
        "Yes: every 10 minutes, from 6 am to midnight.",
        "s4",
    )
    .await;
    post_json(
        &up.base,
        &moderation,
        &mo_api,
        serde_json::json!({"action": "slow_mode", "secs": 30}),
    )
    .await;
    bob.send("Great news, thanks!", "s5").await;

    let token = user_token(&site, &SEED, "7", "Mo", &["moderator"]);
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>City Herald</title><style>\
         body{{margin:0;font:17px/1.6 Georgia,serif;color:#1f2328;background:#fbfaf7}}\
         header{{padding:14px 40px;border-bottom:3px double #1f2328;font:700 26px Georgia,serif;letter-spacing:.04em}}\
         main{{max-width:640px;padding:28px 40px}}h1{{font-size:34px;line-height:1.2;margin:0 0 8px}}\
         .by{{color:#6b6f76;font:14px system-ui,sans-serif;margin-bottom:18px}}</style></head><body>\
         <header>THE CITY HERALD</header><main><h1>Council approves the new tram line</h1>\
         <p class=\"by\">Live: the vote and what comes next · join the discussion</p>\
         <p>After a four-hour session the council voted 31 to 12 for the east&ndash;west tram line. \
         Construction starts in spring; the first trams are planned to run within three years.</p>\
         <p>Residents along the route will be invited to two public meetings in March. \
         Our editors are in the chat below to answer your questions.</p></main>\
         <script src=\"{}/v1/widget.js\" data-site=\"{site}\" data-room=\"{room}\" data-user-token=\"{token}\" async></script>\
         </body></html>",
        up.base
    );
    let _page = HostPage::serve_on("127.0.0.1", port, html).await;
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("moderation.png");
    with_session(&driver, "readme", move |c| async move {
        c.goto(&origin).await.expect("the host page");
        open_widget(&c).await;
        wait_message(&c, "Great news, thanks!").await;
        wait_moderation_line(&c, "Mo turned slow mode on: one message every 30 seconds.").await;
        wait_moderation_line(&c, "Mo timed deals4u out for 10 minutes.").await;
        // The editor's messages carry the mark; the moderator's controls are
        // drawn and visible on every other member's message.
        assert!(marked(&c, "Yes: every 10 minutes, from 6 am to midnight.").await);
        assert!(!marked(&c, "Great news, thanks!").await);
        wait_true(
            &c,
            "[...document.querySelectorAll('#messages li.message:not(.own):not(.system)')]
               .every(li => { const b = li.querySelector('button.mod-button');
                              return b && b.getBoundingClientRect().width > 0; })
             && document.getElementById('slow-mode').getBoundingClientRect().width > 0
             && document.querySelector('#members li.me .verified')",
        )
        .await;
        c.execute("document.activeElement.blur(); return true;", vec![])
            .await
            .expect("blur");
        c.enter_parent_frame().await.expect("back to the page");
        let png = c.screenshot().await.expect("screenshot");
        std::fs::write(&shot, png).expect("save screenshot");
    })
    .await;
    drop(bob);
    drop(spam);
}
