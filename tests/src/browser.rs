//! Real headless Chromium through ChromeDriver (Debian's chromium and
//! chromium-driver), a tiny static server for host pages on any loopback
//! address, so a test can embed the widget from an allowed origin and from
//! a refused one, and axe-core (from npm, in tests/node_modules) to check
//! a page's accessibility.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::free_port;
use crate::procs::{wait_healthy, Proc};

const INSTALL: &str =
    "install them with `apt-get install -y chromium chromium-driver` (make test does)";

/// A chromedriver process of the test's own.
pub struct Driver {
    _proc: Proc,
    url: String,
    profiles: tempfile::TempDir,
}

impl Driver {
    pub async fn start() -> Driver {
        for bin in ["/usr/bin/chromedriver", "/usr/bin/chromium"] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: {INSTALL}"
            );
        }
        let port = free_port();
        let mut cmd = Command::new("/usr/bin/chromedriver");
        cmd.arg(format!("--port={port}"));
        let proc = Proc::spawn("chromedriver", cmd);
        let url = format!("http://127.0.0.1:{port}");
        wait_healthy(&format!("{url}/status"), Duration::from_secs(15)).await;
        Driver {
            _proc: proc,
            url,
            profiles: tempfile::tempdir().expect("profile dir"),
        }
    }

    /// A new browser session with a fresh profile.
    pub async fn session(&self, name: &str) -> Client {
        self.session_in(name, None).await
    }

    /// Like [`Driver::session`], with the browser's languages
    /// (`navigator.languages`) set to `accept_lang` (e.g. `"fr-FR,fr"`)
    /// when given.
    pub async fn session_in(&self, name: &str, accept_lang: Option<&str>) -> Client {
        let profile = self.profiles.path().join(name);
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--no-first-run".into(),
            "--disable-quic".into(),
            "--window-size=1200,900".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        if let Some(langs) = accept_lang {
            args.push(format!("--accept-lang={langs}"));
            args.push(format!(
                "--lang={}",
                langs.split(',').next().unwrap_or(langs)
            ));
        }
        let mut options = serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": args,
        });
        if let Some(langs) = accept_lang {
            options["prefs"] = serde_json::json!({ "intl.accept_languages": langs });
        }
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": options,
        });
        let caps = caps.as_object().expect("caps object").clone();
        ClientBuilder::rustls()
            .expect("tls connector")
            .capabilities(caps)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("cannot start a Chromium session: {e}"))
    }
}

/// Serves one HTML page at `/` from `ip` (any 127.x.y.z address).
pub struct HostPage {
    pub origin: String,
    task: tokio::task::JoinHandle<()>,
}

impl HostPage {
    pub async fn serve(ip: &str, html: String) -> HostPage {
        Self::serve_on(ip, 0, html).await
    }

    /// Like [`HostPage::serve`], on a given port (0 for any).
    pub async fn serve_on(ip: &str, port: u16, html: String) -> HostPage {
        let listener = TcpListener::bind(format!("{ip}:{port}"))
            .await
            .expect("bind host page");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                let html = html.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        html.len()
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(html.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        HostPage {
            origin: format!("http://{addr}"),
            task,
        }
    }
}

impl Drop for HostPage {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A page of a host site that embeds the chat with the widget snippet.
pub fn host_page_html(chat_origin: &str, site: &str, room: &str) -> String {
    host_page_html_with_transport(chat_origin, site, room, None)
}

/// Like [`host_page_html`], with `data-transport="{transport}"` on the
/// widget's script tag when `transport` is given (the frame then reads the
/// room through that transport only).
pub fn host_page_html_with_transport(
    chat_origin: &str,
    site: &str,
    room: &str,
    transport: Option<&str>,
) -> String {
    let attrs: Vec<(&str, &str)> = transport.map(|t| ("transport", t)).into_iter().collect();
    host_page_html_with(chat_origin, site, room, &attrs)
}

/// Like [`host_page_html`], with more `data-{name}="{value}"` attributes
/// on the widget's script tag (values are the test's own, not escaped).
pub fn host_page_html_with(
    chat_origin: &str,
    site: &str,
    room: &str,
    attrs: &[(&str, &str)],
) -> String {
    let attrs: String = attrs
        .iter()
        .map(|(name, value)| format!(" data-{name}=\"{value}\""))
        .collect();
    format!(
        "<!doctype html><html lang=\"en\"><head><title>host</title></head><body><h1>A host page</h1>\
         <script src=\"{chat_origin}/v1/widget.js\" data-site=\"{site}\" data-room=\"{room}\"{attrs} async></script>\
         </body></html>"
    )
}

/// The source of axe-core (`axe.min.js`), installed from npm by
/// `scripts/deps.sh test` (`npm ci` in `tests/`, pinned by its
/// package-lock.json).
pub fn axe_source() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("node_modules")
        .join("axe-core")
        .join("axe.min.js");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; install axe-core with `scripts/deps.sh test` (or `npm ci` in tests/)",
            path.display()
        )
    })
}

/// Runs `steps` with a browser session and always closes it, even when a
/// step panics (a panic would otherwise leave Chromium running).
pub async fn with_session<F, Fut>(driver: &Driver, name: &str, steps: F)
where
    F: FnOnce(Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let client = driver.session(name).await;
    let c = client.clone();
    let result = tokio::spawn(steps(c)).await;
    let _ = client.close().await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}
