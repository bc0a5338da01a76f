//! A guest's life over HTTP: join, send, poll, members, heartbeat,
//! leave, and a retried send.

use super::*;

#[tokio::test]
async fn join_send_poll_members_heartbeat_leave() {
    let node = Node::start(|_| {}).await;
    let (etag0, seq0) = node.version("lobby").await;
    assert_eq!((etag0.as_str(), seq0), ("\"r0.0\"", 0), "an unwritten room");

    let ann = node.join("lobby", " Ann ").await;
    assert_eq!(ann["member"]["nick"], "Ann");
    assert_eq!(ann["etag"], "\"r0.0\"");
    assert_eq!(ann["members"].as_array().unwrap().len(), 1);
    let token = ann["token"].as_str().unwrap();

    let res = node.send("lobby", token, "hello <b>world</b>", "c1").await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let etag1 = res.headers()["etag"].to_str().unwrap().to_owned();
    let event: Value = res.json().await.unwrap();
    assert_eq!(event["seq"], 1);
    assert_eq!(event["kind"], "message");
    assert_eq!(event["text"], "hello <b>world</b>");
    assert_eq!(event["nick"], "Ann");
    assert!(
        etag1.starts_with("\"r") && etag1.ends_with(".1\""),
        "{etag1}"
    );

    // Poll: the page, then 304 on the current ETag (from the cache and the
    // store alike), then 200 again after a new message.
    let res = node
        .get("/v1/sites/demo/rooms/lobby/messages?after=0")
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["etag"].to_str().unwrap(), etag1);
    assert_eq!(res.headers()["cache-control"], "no-cache");
    let page: Value = res.json().await.unwrap();
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert_eq!(page["seq"], 1);
    assert_eq!(page["more"], false);
    for inm in [
        etag1.clone(),
        format!("W/{etag1}"),
        format!("\"x\", {etag1}"),
        "*".into(),
    ] {
        let res = node
            .client
            .get(node.url("/v1/sites/demo/rooms/lobby/messages?after=1"))
            .header("if-none-match", inm.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "{inm}");
        assert_eq!(res.headers()["etag"].to_str().unwrap(), etag1);
        assert!(res.bytes().await.unwrap().is_empty());
    }
    let res = node.send("lobby", token, "second", "c2").await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = node
        .client
        .get(node.url("/v1/sites/demo/rooms/lobby/messages?after=1"))
        .header("if-none-match", etag1.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "a new message is never a 304");
    let page: Value = res.json().await.unwrap();
    assert_eq!(page["events"][0]["text"], "second");

    // Members: ETag and 304; a second guest changes it.
    let res = node.get("/v1/sites/demo/rooms/lobby/members").await;
    assert_eq!(res.status(), StatusCode::OK);
    let metag = res.headers()["etag"].to_str().unwrap().to_owned();
    assert!(metag.starts_with("\"m"));
    let res = node
        .client
        .get(node.url("/v1/sites/demo/rooms/lobby/members"))
        .header("if-none-match", metag.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    let bob = node.join("lobby", "Bob").await;
    assert_eq!(bob["members"].as_array().unwrap().len(), 2);
    assert_eq!(bob["messages"].as_array().unwrap().len(), 2);
    let res = node
        .client
        .get(node.url("/v1/sites/demo/rooms/lobby/members"))
        .header("if-none-match", metag.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // Heartbeat and leave.
    let bob_token = bob["token"].as_str().unwrap();
    let res = node
        .post_json(
            "/v1/sites/demo/rooms/lobby/heartbeat",
            Some(bob_token),
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = node
        .client
        .post(node.url("/v1/sites/demo/rooms/lobby/leave"))
        .bearer_auth(bob_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let members: Value = node
        .get("/v1/sites/demo/rooms/lobby/members")
        .await
        .json()
        .await
        .unwrap();
    let nicks: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["nick"].as_str().unwrap())
        .collect();
    assert_eq!(nicks, ["Ann"]);

    // A rejoin with the token keeps the member id.
    let res = node
        .post_json(
            "/v1/sites/demo/rooms/lobby/join",
            Some(bob_token),
            &json!({"nick": "Bobby"}),
        )
        .await;
    let again: Value = res.json().await.unwrap();
    assert_eq!(again["member"]["id"], bob["member"]["id"]);
    assert_eq!(again["member"]["nick"], "Bobby");
    node.stop().await;
}

#[tokio::test]
async fn a_retried_send_returns_the_original() {
    let node = Node::start(|_| {}).await;
    let ann = node.join("retry", "Ann").await;
    let token = ann["token"].as_str().unwrap();
    let first = node.send("retry", token, "once", "same-id").await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let again = node.send("retry", token, "once", "same-id").await;
    assert_eq!(again.status(), StatusCode::OK);
    let etag = again.headers()["etag"].to_str().unwrap().to_owned();
    let again: Value = again.json().await.unwrap();
    assert_eq!(first, again);
    assert!(etag.ends_with(".1\""));
    assert_eq!(node.version("retry").await.1, 1);
    node.stop().await;
}
