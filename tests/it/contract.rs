//! The API contract under generated input: schemathesis, driven by the
//! OpenAPI document the API serves, sends through the edge what it can
//! derive from it to a node on MariaDB and Redis, and every answer must be
//! no 5xx and must conform to the documented schema.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chatty_tests::procs::ADMIN_TOKEN;
use chatty_tests::stack::{Stack, RATES_OFF};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

#[tokio::test]
async fn schemathesis_through_the_edge_finds_no_server_error_and_no_schema_violation() {
    let _heavy = chatty_tests::heavy().await;
    let found = Command::new("schemathesis").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "schemathesis is missing: install it with `scripts/deps.sh test` (make test does)"
    );
    let s = Stack::start(1, RATES_OFF, &["--ip-rate", "off"]).await;

    let script = Path::new(ROOT).join("scripts/schemathesis.sh");
    // With the operator token the admin operations are reached too.
    let run = tokio::process::Command::new(script)
        .arg(&s.edge.base)
        .arg("-H")
        .arg(format!("Authorization: Bearer {ADMIN_TOKEN}"))
        .env("SCHEMATHESIS_SITE", "acme")
        .env("SCHEMATHESIS_MAX_EXAMPLES", "25")
        .current_dir(std::env::temp_dir())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("schemathesis finished within 10 minutes")
        .expect("run scripts/schemathesis.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(out.status.success(), "schemathesis found failures (above)");
    assert!(stdout.contains("schemathesis: no failure"), "{stdout}");
}
