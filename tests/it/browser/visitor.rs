//! The frame as a visitor meets it: the room before any name, the name on
//! the first send, keyboard-only use, its languages (Arabic right to left),
//! axe-core, a refused send counted down, its files compressed with
//! validators through the edge.

use super::*;

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
        second_send_counts_down(
            &c,
            "You are sending messages too fast. You can send again in",
        )
        .await;
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
