//! What a portal sets up: a user the host site signs in, marked as
//! verified, whose name no guest takes; a room's slow mode counted down; a
//! blocked word masked or refused as the site chose.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_user_is_marked_and_a_guest_can_neither_look_verified_nor_take_the_name() {
    const SEED: [u8; 32] = [5; 32];
    let up = ChattyUp::start().await;
    let driver = Driver::start().await;
    let (port, origin) = free_origin().await;
    let (site, created) = site_add(&up, &origin);
    let secret = created["secret"].as_str().expect("site secret").to_owned();
    add_user_key(&up.base, &site, &secret, &SEED).await;
    // The host site's backend signs a token for its user Ann.
    let token = user_token(&site, &SEED, "42", "Ann Editor", &[]);
    let html = host_page_html_with(&up.base, &site, "front", &[("user-token", &token)]);
    let _page = HostPage::serve_on("127.0.0.1", port, html).await;

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
        let first =
            second_send_counts_down(&c, "Slow mode is on in this room. You can send again in")
                .await;
        assert!((1..=5).contains(&first), "{first}");
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
