//! Two visitors chat through the edge and user text stays text; history
//! survives a reload and a leaver drops out; only allowed origins frame the
//! chat, a site from `chatty site add` works on its own origin only; a
//! banned guest keeps reading and sends nothing more.

use super::*;

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
