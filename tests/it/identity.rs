//! A site owner's first signed-in user, as the README tells it: an Ed25519
//! key made with OpenSSL, registered with `chatty site keys`, a token signed
//! by `ops/examples/user-token.sh`, the user joining with it once; then the
//! member erased with `chatty site erase` and the key removed.

use std::process::Command;

use chatty_tests::procs::ChattyUp;
use serde_json::{json, Value};

/// Runs `sh -c script` in `dir`; its standard output, trimmed.
fn sh(dir: &std::path::Path, script: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("run sh (and openssl: `scripts/deps.sh test` installs it)");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

#[tokio::test]
async fn the_readme_signing_script_and_chatty_site_keys_sign_a_user_in() {
    let up = ChattyUp::start().await;
    let created: Value = serde_json::from_str(&up.chatty(&[
        "site",
        "add",
        "--origin",
        "http://localhost:1",
        "--json",
    ]))
    .expect("site add --json");
    let site = created["site"]["id"].as_str().expect("site id").to_owned();
    let secret = created["secret"].as_str().expect("secret").to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    // The README's steps.
    sh(
        dir.path(),
        "openssl genpkey -algorithm ed25519 -out chatty-user.pem",
    );
    let public = sh(
        dir.path(),
        "openssl pkey -in chatty-user.pem -pubout -outform DER | tail -c 32 \
         | openssl base64 -A | tr '+/' '-_' | tr -d '='",
    );
    // Through the running stack's API, so that it hears each change at once.
    let keys = |args: &[&str]| {
        let mut all = vec![
            "site", "keys", &site, "--secret", &secret, "--target", &up.base,
        ];
        all.extend_from_slice(args);
        up.chatty(&all)
    };
    assert_eq!(
        keys(&["--add", "k1", "--key", &public]).trim(),
        "k1\ted25519"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../ops/examples/user-token.sh");
    let sign = || {
        sh(
            dir.path(),
            &format!("{script} chatty-user.pem k1 {site} 42 'Ann Editor' moderator"),
        )
    };
    let join = |token: String| {
        let url = format!("{}/v1/sites/{site}/rooms/hall/join", up.base);
        async move {
            chatty_tests::http()
                .post(url)
                .json(&json!({ "user_token": token }))
                .send()
                .await
                .expect("join")
        }
    };
    let token = sign();
    let res = join(token.clone()).await;
    assert_eq!(res.status(), 200);
    let ann: Value = res.json().await.expect("join answer");
    assert_eq!(ann["member"], json!({"id": "u_42", "nick": "Ann Editor"}));
    assert_eq!(ann["moderator"], json!(true));
    assert_eq!(join(token).await.status(), 401, "a token works once");

    // Ann writes; her words are erased on request.
    let sent = chatty_tests::http()
        .post(format!("{}/v1/sites/{site}/rooms/hall/messages", up.base))
        .bearer_auth(ann["token"].as_str().expect("guest token"))
        .json(&json!({"text": "call me at 555-0100", "client_id": "c1"}))
        .send()
        .await
        .expect("send");
    assert_eq!(sent.status(), 201);
    let erased = up.chatty(&[
        "site", "erase", &site, "--secret", &secret, "--member", "u_42", "--target", &up.base,
    ]);
    assert_eq!(erased.trim(), "erased 1 messages in 1 rooms");
    let page = chatty_tests::http()
        .get(format!("{}/v1/sites/{site}/rooms/hall/messages", up.base))
        .send()
        .await
        .expect("read")
        .text()
        .await
        .expect("page");
    assert!(!page.contains("555-0100"), "{page}");

    // The key removed: a fresh token of it is refused at once.
    assert_eq!(keys(&["--remove", "k1"]), "");
    assert_eq!(join(sign()).await.status(), 401);
}
