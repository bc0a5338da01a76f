//! A moderator in the chat: a guest timed out and its message deleted, seen
//! by every viewer, and the scene of the README's screenshot.

use super::*;

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
