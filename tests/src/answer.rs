//! An HTTP answer as a test reads it, whether reqwest received it or it was
//! read off a raw socket, and `check(request, expect)`: one line a case in
//! the tables of requests a test sends and the answers it expects.

use std::fmt;

use reqwest::RequestBuilder;

/// What a case expects of an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// This status, whatever the body.
    Status(u16),
    /// This status with the JSON error body of this code, and a message.
    Refused(u16, &'static str),
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Status(status) => write!(f, "status {status}"),
            Expect::Refused(status, code) => write!(f, "status {status} with error {code:?}"),
        }
    }
}

/// Sends `request` and asserts its answer is what `expect` says (a failure
/// names the request: method, URL, credentials, body); returns the answer
/// for whatever else the case looks at.
pub async fn check(request: RequestBuilder, expect: Expect) -> Answer {
    let answer = Answer::of(request).await;
    answer.assert(expect, &answer.request);
    answer
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "status {}, headers {:?}, body {:?}",
            self.status, self.headers, self.body
        )
    }
}

/// An answer: its status, its headers (names in lower case) and its body.
#[derive(Debug)]
pub struct Answer {
    /// The request it answers, for failure messages.
    pub request: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// Sends `request` and reads the whole answer.
    pub async fn of(request: RequestBuilder) -> Answer {
        let (client, request) = request.build_split();
        let request = request.unwrap_or_else(|e| panic!("a bad request: {e}"));
        let sent = describe(&request);
        let resp = client
            .execute(request)
            .await
            .unwrap_or_else(|e| panic!("no answer to {sent}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect();
        let body = resp.text().await.unwrap_or_default();
        Answer {
            request: sent,
            status,
            headers,
            body,
        }
    }

    /// Reads an HTTP/1.1 answer from the bytes a raw connection received
    /// (the body as it came, not de-chunked).
    pub fn parse(raw: &[u8]) -> Answer {
        let text = String::from_utf8_lossy(raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
        let headers = lines
            .filter_map(|l| {
                let (name, value) = l.split_once(':')?;
                Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            })
            .collect();
        Answer {
            request: "written by hand".to_owned(),
            status,
            headers,
            body: body.to_owned(),
        }
    }

    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The seconds of its `Retry-After`, which it must have.
    pub fn retry_after(&self) -> u64 {
        let value = self
            .header("retry-after")
            .unwrap_or_else(|| panic!("no Retry-After in the answer to {}: {self}", self.request));
        value
            .parse()
            .unwrap_or_else(|_| panic!("Retry-After {value:?} is not in seconds"))
    }

    /// The body as JSON, which it must be.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("the answer to {} is not JSON ({e}): {self}", self.request))
    }

    /// Asserts the answer is what `expect` says.
    pub fn assert(&self, expect: Expect, what: &str) {
        let status = match expect {
            Expect::Status(status) | Expect::Refused(status, _) => status,
        };
        assert_eq!(self.status, status, "{what}: expected {expect}, got {self}");
        if let Expect::Refused(_, code) = expect {
            let v: serde_json::Value = serde_json::from_str(&self.body)
                .unwrap_or_else(|e| panic!("{what}: error body is not JSON ({e}): {self}"));
            assert_eq!(v["error"]["code"], code, "{what}: {self}");
            assert!(
                v["error"]["message"].is_string(),
                "{what}: no error message: {self}"
            );
        }
    }
}

/// `POST http://… (authorization: Bearer …) {"text":…}`: enough to tell the
/// cases of a table apart.
fn describe(request: &reqwest::Request) -> String {
    let mut out = format!("{} {}", request.method(), request.url());
    if let Some(auth) = request.headers().get("authorization") {
        out.push_str(&format!(
            " (authorization: {})",
            auth.to_str().unwrap_or("?")
        ));
    }
    if let Some(body) = request.body().and_then(|b| b.as_bytes()) {
        let body = String::from_utf8_lossy(body);
        let cut = body.char_indices().nth(200).map_or(body.len(), |(i, _)| i);
        out.push(' ');
        out.push_str(&body[..cut]);
    }
    out
}
