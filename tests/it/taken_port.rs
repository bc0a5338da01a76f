//! A port another process holds: edge-proxy and `chatty up` exit at once,
//! non-zero, naming the address and the flag (instead of retrying while the
//! other process answers their clients).

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use chatty_tests::free_port;
use chatty_tests::procs::bin;

/// Runs `cmd` to its end, which must come within 2 s.
fn exits_quickly(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the binary");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > Duration::from_secs(2) {
            let _ = child.kill();
            panic!("still running after 2 s on a taken port");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn assert_refused(out: &Output, addr: &str, flag: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit status {}", out.status);
    assert!(
        stderr.contains(&format!("cannot listen on {addr} ({flag})")),
        "stderr does not name {addr} and {flag}: {stderr}"
    );
}

#[test]
fn edge_proxy_exits_when_its_port_is_taken() {
    let held = TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let taken = held.local_addr().unwrap().to_string();
    let free = format!("127.0.0.1:{}", free_port());
    for (flag, listen, metrics) in [
        ("--listen", &taken, &free),
        ("--metrics-listen", &free, &taken),
    ] {
        let mut cmd = Command::new(bin("edge-proxy"));
        cmd.args(["--listen", listen, "--metrics-listen", metrics])
            .args(["--upstream", "127.0.0.1:9"]);
        assert_refused(&exits_quickly(cmd), &taken, flag);
    }
}

#[test]
fn chatty_up_exits_when_its_port_is_taken() {
    let held = TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let taken = held.local_addr().unwrap().to_string();
    let data_dir = tempfile::tempdir().expect("data dir");
    let mut cmd = Command::new(bin("chatty"));
    cmd.args(["up", "--listen", &taken, "--data-dir"])
        .arg(data_dir.path());
    let out = exits_quickly(cmd);
    assert_refused(&out, &taken, "--listen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("Chatty is up"),
        "announced anyway: {stdout}"
    );
}
