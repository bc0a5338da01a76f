//! HTTP-level tests of one embedded API node (SQLite, in-process bus),
//! served on port 0 and driven with reqwest: the test node here, the
//! cases by subject in the modules below.

use std::sync::Arc;
use std::time::Duration;

use chat_api::{App, Config};
use chat_api::{Claims, TokenKeys};
use chatty_shared::{parse_rate, Bus, Rate};
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{json, Value};

struct Node {
    base: String,
    client: Client,
    dir: tempfile::TempDir,
    /// The node's in-process bus, to hear what it publishes.
    bus: Arc<dyn Bus>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Node {
    async fn start(tweak: impl FnOnce(&mut Config)) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::embedded(dir.path());
        config.admin_token = Some(OPERATOR.into());
        config.node_name = Some("test-node".into());
        config.workers = Some(1);
        tweak(&mut config);
        let app = App::build(config).await.unwrap();
        let bus = app.bus();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run(listener, async move {
            let _ = rx.await;
        }));
        let node = Node {
            base: format!("http://{addr}"),
            client: Client::new(),
            dir,
            bus,
            stop: Some(tx),
            task: Some(task),
        };
        for _ in 0..100 {
            if node.get("/healthz").await.status() == StatusCode::OK {
                return node;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the node did not start");
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("stopped in time")
                .unwrap()
                .unwrap();
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> reqwest::Response {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    async fn join(&self, room: &str, nick: &str) -> Value {
        let res = self
            .post_json(
                &format!("/v1/sites/demo/rooms/{room}/join"),
                None,
                &json!({"nick": nick}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.unwrap()
    }

    async fn send(
        &self,
        room: &str,
        token: &str,
        text: &str,
        client_id: &str,
    ) -> reqwest::Response {
        self.post_json(
            &format!("/v1/sites/demo/rooms/{room}/messages"),
            Some(token),
            &json!({"text": text, "client_id": client_id}),
        )
        .await
    }

    /// The room's messages ETag and seq as a reader sees them.
    async fn version(&self, room: &str) -> (String, u64) {
        let res = self
            .get(&format!("/v1/sites/demo/rooms/{room}/messages"))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let etag = res.headers()["etag"].to_str().unwrap().to_owned();
        let page: Value = res.json().await.unwrap();
        (etag, page["seq"].as_u64().unwrap())
    }

    /// Creates the site `id` allowing `origin`, as the operator; answers
    /// the site's secret.
    async fn create_site(&self, id: &str, origin: &str) -> String {
        let res = self
            .client
            .post(self.url("/v1/admin/sites"))
            .bearer_auth(OPERATOR)
            .json(&json!({"id": id, "origins": [origin]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        let created: Value = res.json().await.unwrap();
        created["secret"].as_str().unwrap().to_owned()
    }

    fn keys(&self) -> TokenKeys {
        let key = std::fs::read_to_string(self.dir.path().join("token.key")).unwrap();
        TokenKeys::new(vec![key.trim().as_bytes().to_vec()]).unwrap()
    }
}

async fn error_code(res: reqwest::Response) -> String {
    let body: Value = res.json().await.unwrap();
    body["error"]["code"].as_str().unwrap().to_owned()
}

/// The operator token of every test node.
const OPERATOR: &str = "operator-token";

/// The status of the answer to `request`.
async fn status_of(request: RequestBuilder) -> StatusCode {
    request.send().await.unwrap().status()
}

mod assets;
mod guests;
mod identity;
mod moderation;
mod presence;
mod refused;
mod rules;
mod service;
mod sites;
