//! Moderation through two API nodes and the edge: a moderator (a signed-in
//! user of the site with the moderator role) acts on node A, the member it
//! timed out is refused on node B at once (the timeout is read from the
//! store on every send, not cached), and every guest, polling or streaming
//! through the edge, is shown the deletion and the moderation events.

use std::time::{Duration, Instant};

use chat_api::{ed25519_public, sign_user_token, HostClaims, KeyAlg};
use chatty_shared::wire::{Event, EventKind};
use chatty_tests::chat::{client, Guest, Reader};
use chatty_tests::sse::{Ask, Stream};
use chatty_tests::stack::{Stack, RATES_OFF};
use serde_json::{json, Value};

const SEED: [u8; 32] = [21; 32];
const ROOM: &str = "/v1/sites/acme/rooms/hall";
/// How long a guest may wait for an event through the edge before the test
/// gives up (a deadline, not a measure of speed).
const PATIENCE: Duration = Duration::from_secs(10);

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `POST {base}{path}` with `auth`: the status, `Retry-After` and body.
async fn post(base: &str, path: &str, auth: &str, body: Value) -> (u16, Option<String>, Value) {
    let res = chatty_tests::http()
        .post(format!("{base}{path}"))
        .bearer_auth(auth)
        .json(&body)
        .send()
        .await
        .expect("post");
    let status = res.status().as_u16();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, res.json().await.expect("a JSON body"))
}

/// A send through `base` by the holder of `token`.
async fn send(base: &str, token: &str, text: &str) -> (u16, Option<String>, Value) {
    let body = json!({"text": text, "client_id": format!("c{}", rand::random::<u64>())});
    post(base, &format!("{ROOM}/messages"), token, body).await
}

/// Whether `events` hold the deletion of `seq`, the moderation `moderation`
/// and the message `after`.
fn shows_all(events: &[Event], seq: u64, moderation: &Event, after: &Event) -> bool {
    let deleted = events
        .iter()
        .any(|e| e.kind == EventKind::Deletion && e.deletes == Some(seq));
    deleted && events.contains(moderation) && events.iter().any(|e| e.seq == after.seq)
}

#[tokio::test]
async fn an_action_on_node_a_holds_on_node_b_at_once_and_every_guest_sees_it_through_the_edge() {
    let stack = Stack::start(2, RATES_OFF, &[]).await;
    let (a, b) = (&stack.apis[0].base, &stack.apis[1].base);
    let edge = format!("http://{}", stack.edge_addr());

    // The site's key, registered on node A.
    let key = json!({"kid": "k1", "alg": "ed25519", "key": ed25519_public(&SEED)});
    let (status, _, body) = post(a, "/v1/sites/acme/user-keys", &stack.secret, key).await;
    assert_eq!(status, 201, "{body}");

    // A moderator and two guests join through the edge.
    let claims = HostClaims {
        aud: "acme".into(),
        sub: "7".into(),
        name: "Mo Derator".into(),
        roles: vec!["moderator".into()],
        iat: now(),
        exp: now() + 300,
        jti: format!("it-{}", rand::random::<u64>()),
    };
    let user_token = sign_user_token(&claims, "k1", KeyAlg::Ed25519, &SEED);
    let (status, _, mo) = post(
        &edge,
        &format!("{ROOM}/join"),
        "",
        json!({"user_token": user_token}),
    )
    .await;
    assert_eq!(status, 200, "{mo}");
    assert_eq!(mo["moderator"], json!(true));
    let mo_token = mo["token"].as_str().unwrap().to_owned();
    let gus = Guest::join(&edge, "acme", "hall", "Gus").await;
    let ida = Guest::join(&edge, "acme", "hall", "Ida").await;
    let guests = [&gus, &ida];

    // Each guest follows the room through the edge: a stream and polls.
    let mut streams = Vec::new();
    for g in guests {
        let ask = Ask {
            after: Some(0),
            token: Some(&g.joined.token),
            ..Ask::default()
        };
        let s = Stream::open(&edge, ("acme", "hall"), ask).await;
        assert_eq!(s.status, 200);
        streams.push(s);
    }
    let mut readers = [Reader::new(), Reader::new()];

    let spam = gus.send("buy my stuff", "c-spam").await;

    // On node A: the moderator deletes it and times Gus out.
    let res = chatty_tests::http()
        .delete(format!("{a}{ROOM}/messages/{}", spam.seq))
        .bearer_auth(&mo_token)
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), 200);
    let deletion: Event = res.json().await.unwrap();
    assert_eq!(deletion.deletes, Some(spam.seq));
    let timeout = json!({"action": "timeout", "member_id": gus.joined.member.id, "secs": 600});
    let (status, _, done) = post(a, &format!("{ROOM}/moderation"), &mo_token, timeout).await;
    assert_eq!(status, 200, "{done}");
    let moderation: Event = serde_json::from_value(done["event"].clone()).unwrap();
    assert_eq!(moderation.kind, EventKind::Moderation);
    assert_eq!(moderation.text, "timeout:600");
    assert_eq!(moderation.nick, "Mo Derator");
    assert_eq!(moderation.member_id, gus.joined.member.id);

    // On node B, at once: Gus is refused, with the time left; through the
    // edge too. Ida is not touched.
    let (status, retry, body) = send(b, &gus.joined.token, "am I muted?").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "timed_out");
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((590..=600).contains(&retry), "Retry-After {retry}");
    let (status, _, body) = send(&edge, &gus.joined.token, "through the edge").await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("timed_out")));
    // Gus's new token (a rejoin keeping its id) is refused as well.
    let (status, _, body) = post(
        b,
        &format!("{ROOM}/join"),
        &gus.joined.token,
        json!({"nick": "Gus2"}),
    )
    .await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("timed_out")));
    let (status, _, after) = send(b, &ida.joined.token, "on we go").await;
    assert_eq!(status, 201, "{after}");
    let after: Event = serde_json::from_value(after).unwrap();

    // Every guest sees the deletion, the moderation event and what came
    // after, in order, by its stream and by its polls through the edge.
    for (g, stream) in guests.iter().zip(&mut streams) {
        let mut seen = Vec::new();
        while !shows_all(&seen, spam.seq, &moderation, &after) {
            let e = stream
                .next_log(PATIENCE)
                .await
                .unwrap_or_else(|| panic!("{}'s stream ended", g.joined.member.nick));
            seen.push(e);
        }
        let seqs: Vec<u64> = seen.iter().map(|e| e.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    }
    for (g, reader) in guests.iter().zip(&mut readers) {
        let polling = client(&edge, "acme");
        let deadline = Instant::now() + PATIENCE;
        while !shows_all(&reader.events, spam.seq, &moderation, &after) {
            assert!(
                Instant::now() < deadline,
                "{} never saw it all: {:?}",
                g.joined.member.nick,
                reader.events
            );
            reader.poll(&polling, "hall").await.expect("poll");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        reader.assert_gapless();
    }

    // The audit (site secret, node B) names who did what.
    let audit: Value = chatty_tests::http()
        .get(format!("{b}/v1/sites/acme/audit"))
        .bearer_auth(&stack.secret)
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .unwrap();
    let actions: Vec<(&str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["action"].as_str().unwrap(),
                l["moderator_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(actions, [("timeout", "u_7"), ("delete", "u_7")]);
}
