//! What a node serves besides the chat: assets, health, metrics, the
//! OpenAPI document matched against the routes, and rate limits.

use super::*;

#[tokio::test]
async fn assets_health_metrics_and_openapi() {
    let node = Node::start(|_| {}).await;
    let res = node.get("/v1/widget.js").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "public, max-age=300");
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    for path in ["/v1/frame.js", "/v1/frame.css", "/"] {
        assert_eq!(node.get(path).await.status(), StatusCode::OK, "{path}");
    }
    let res = node.get("/v1/sites/demo/rooms/lobby/frame").await;
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.ends_with("frame-ancestors http://localhost:* http://127.0.0.1:*"),
        "{csp}"
    );
    assert_eq!(
        node.get("/v1/sites/nosuch/rooms/lobby/frame")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let ready: Value = node.get("/readyz").await.json().await.unwrap();
    assert_eq!(
        ready,
        json!({"store": "ok", "bus": "ok", "draining": false})
    );
    let metrics = node.get("/metrics").await.text().await.unwrap();
    for name in [
        "chatty_api_requests_total",
        "chatty_api_request_duration_seconds",
        "chatty_api_rate_limited_total",
        "chatty_api_backend_up",
    ] {
        assert!(metrics.contains(name), "{name}");
    }
    let doc: Value = node.get("/v1/openapi.json").await.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(doc["paths"]["/v1/sites/{site}/rooms/{room}/messages"]["get"].is_object());
    node.stop().await;

    // Without the demo site, / is a 404.
    let node = Node::start(|c| c.demo_site = Some(false)).await;
    assert_eq!(node.get("/").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        node.get("/v1/sites/demo/rooms/lobby/messages")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    node.stop().await;
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let node = Node::start(|c| {
        c.guest_rate = chat_api::RateSetting(parse_rate("2/1m").unwrap());
    })
    .await;
    let ann = node.join("rl", "Ann").await;
    let token = ann["token"].as_str().unwrap();
    for i in 0..2 {
        assert_eq!(
            node.send("rl", token, "x", &format!("c{i}")).await.status(),
            StatusCode::CREATED
        );
    }
    let res = node.send("rl", token, "x", "c9").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=120).contains(&after), "{after}");
    assert_eq!(error_code(res).await, "rate_limited");
    assert_eq!(
        node.version("rl").await.1,
        2,
        "the limited send stored nothing"
    );
    node.stop().await;

    let node = Node::start(|c| {
        c.ip_rate = chatty_api_rate(Rate {
            count: 2,
            per: Duration::from_secs(60),
        });
    })
    .await;
    node.join("rl", "a").await;
    node.join("rl", "b").await;
    let res = node
        .post_json("/v1/sites/demo/rooms/rl/join", None, &json!({"nick": "c"}))
        .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    node.stop().await;
}

fn chatty_api_rate(rate: Rate) -> chat_api::RateSetting {
    chat_api::RateSetting(Some(rate))
}

/// The OpenAPI document and the routes agree: every documented operation
/// is served (neither 404 nor 405 for the demo site), and every other
/// method on a documented path is a 405.
#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let node = Node::start(|_| {}).await;
    let doc: Value = node.get("/v1/openapi.json").await.json().await.unwrap();
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 18, "{} paths", paths.len());
    for (path, ops) in paths {
        let concrete = path
            .replace("{site}", "demo")
            .replace("{room}", "lobby")
            .replace("{seq}", "1");
        for method in ["get", "post", "put", "delete", "patch"] {
            let res = node
                .client
                .request(method.to_uppercase().parse().unwrap(), node.url(&concrete))
                .send()
                .await
                .unwrap();
            let status = res.status();
            if ops.get(method).is_some() {
                assert!(
                    status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is documented but answers {status}"
                );
                let documented = &ops[method]["responses"][status.as_str()];
                assert!(
                    documented.is_object(),
                    "{method} {path} answers {status}, which the document does not list"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is not documented"
                );
            }
        }
    }
    node.stop().await;
}
