//! Each way of reading the room (event stream, held polls, 2-second
//! polls), forced or picked by the widget, carries messages and presence,
//! with heartbeats only on plain polls.

use super::*;

/// Presence TTL of the transport tests' API node: a guest nobody vouches for
/// (no heartbeat, no report from the edge) leaves the list this long after
/// joining.
const PRESENCE_TTL: Duration = Duration::from_secs(15);

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
