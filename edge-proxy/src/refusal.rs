//! Everything the edge refuses, as one type: a status, the error code and
//! message of the JSON body the API nodes write too
//! ([`chatty_shared::wire::error_body`]), and an optional `Retry-After`.
//! Each refusal is built once here and rendered either as the bytes the
//! connection layer writes ([`Refusal::http1`]) or into pingora's session
//! ([`Refusal::respond`]), with the same headers.

use bytes::Bytes;
use chatty_shared::wire::error_body;
use http::StatusCode;
use pingora::http::ResponseHeader;
use pingora::prelude::Session;
use pingora::{Error, ErrorSource, ErrorType};

/// One refusal of the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: &'static str,
    /// Whole seconds the client should wait before trying again.
    pub retry_after: Option<u64>,
}

impl Refusal {
    const fn new(
        status: u16,
        code: &'static str,
        message: &'static str,
        retry_after: Option<u64>,
    ) -> Self {
        Self {
            status,
            code,
            message,
            retry_after,
        }
    }

    pub const TOO_MANY_CONNECTIONS: Refusal = Refusal::new(
        429,
        "rate_limited",
        "too many connections from this address",
        Some(1),
    );
    pub const HEADER_TIMEOUT: Refusal = Refusal::new(
        408,
        "bad_request",
        "request header not received in time",
        None,
    );
    pub const HEADER_TOO_LARGE: Refusal =
        Refusal::new(431, "bad_request", "request header too large", None);
    pub const BODY_TOO_LARGE: Refusal =
        Refusal::new(413, "too_large", "request body too large", None);
    pub const MALFORMED: Refusal = Refusal::new(400, "bad_request", "malformed request", None);
    pub const TIMED_OUT: Refusal = Refusal::new(408, "bad_request", "request timed out", None);
    pub const NO_HEALTHY_NODE: Refusal =
        Refusal::new(503, "unavailable", "no healthy API node", Some(1));
    pub const NODE_FAILED: Refusal =
        Refusal::new(502, "unavailable", "the API node failed to answer", Some(1));
    /// A route of the API nodes for the edge alone.
    pub const INTERNAL: Refusal = Refusal::new(404, "not_found", "no such route", None);
    pub const NOT_FORWARDED: Refusal = Refusal::new(
        503,
        "unavailable",
        "the edge could not forward the request",
        Some(1),
    );

    /// Too many requests from one address; try again in `retry_after` s.
    pub fn too_many_requests(retry_after: u64) -> Refusal {
        Refusal::new(
            429,
            "rate_limited",
            "too many requests from this address",
            Some(retry_after),
        )
    }

    /// A refusal decided in a pingora filter, carried to
    /// [`Refusal::of_error`] as an error.
    pub fn err<T>(self) -> pingora::Result<T> {
        Error::e_explain(ErrorType::HTTPStatus(self.status), self.message)
    }

    /// What a request that failed in pingora is answered; `None` when the
    /// client is gone and there is no one to answer.
    pub fn of_error(e: &Error) -> Option<Refusal> {
        Some(match (e.etype(), e.esource()) {
            (ErrorType::HTTPStatus(413), _) => Self::BODY_TOO_LARGE,
            (ErrorType::HTTPStatus(503), _) => Self::NO_HEALTHY_NODE,
            (ErrorType::HTTPStatus(400), _) => Self::MALFORMED,
            (_, ErrorSource::Upstream) => Self::NODE_FAILED,
            (
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
                ErrorSource::Downstream,
            ) => return None,
            (ErrorType::ReadTimedout, ErrorSource::Downstream) => Self::TIMED_OUT,
            (_, ErrorSource::Downstream) => Self::MALFORMED,
            (_, ErrorSource::Internal | ErrorSource::Unset) => Self::NOT_FORWARDED,
        })
    }

    /// The JSON body.
    fn body(&self) -> Vec<u8> {
        error_body(self.code, self.message)
    }

    /// The headers of the answer with a body of `len` bytes, in order.
    fn headers(&self, len: usize) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("Content-Type", "application/json".to_owned()),
            ("Content-Length", len.to_string()),
            ("Cache-Control", "no-store".to_owned()),
        ];
        if let Some(secs) = self.retry_after {
            headers.push(("Retry-After", secs.to_string()));
        }
        headers
    }

    /// The whole HTTP/1.1 answer, closing the connection, for the
    /// connection layer.
    pub fn http1(&self) -> Vec<u8> {
        let body = self.body();
        let reason = StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let mut out = format!("HTTP/1.1 {} {reason}\r\n", self.status);
        for (name, value) in self.headers(body.len()) {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("Connection: close\r\n\r\n");
        let mut out = out.into_bytes();
        out.extend_from_slice(&body);
        out
    }

    /// Writes the answer into pingora's session, which closes the
    /// connection after it.
    pub async fn respond(&self, session: &mut Session) {
        let body = Bytes::from(self.body());
        let Ok(mut resp) = ResponseHeader::build(self.status, Some(5)) else {
            return;
        };
        for (name, value) in self.headers(body.len()) {
            let _ = resp.insert_header(name, value);
        }
        if let Err(e) = session
            .as_downstream_mut()
            .write_error_response(resp, body)
            .await
        {
            tracing::debug!(error = %e, "could not write an error answer");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bytes_of_a_refusal() {
        let bytes = Refusal::too_many_requests(3).http1();
        let body =
            r#"{"error":{"code":"rate_limited","message":"too many requests from this address"}}"#;
        let expect = format!(
            "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: {}\r\nCache-Control: no-store\r\nRetry-After: 3\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(String::from_utf8(bytes).unwrap(), expect);
        let head = String::from_utf8(Refusal::HEADER_TOO_LARGE.http1()).unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(!head.contains("Retry-After"));
    }

    #[test]
    fn errors_become_refusals() {
        use ErrorSource::{Downstream, Internal, Upstream};
        use ErrorType::*;
        use Refusal as R;
        for (etype, source, expect) in [
            (HTTPStatus(413), Downstream, Some(R::BODY_TOO_LARGE)),
            (HTTPStatus(503), Internal, Some(R::NO_HEALTHY_NODE)),
            (HTTPStatus(400), Downstream, Some(R::MALFORMED)),
            (ConnectTimedout, Upstream, Some(R::NODE_FAILED)),
            (WriteError, Downstream, None),
            (ReadTimedout, Downstream, Some(R::TIMED_OUT)),
            (InvalidHTTPHeader, Downstream, Some(R::MALFORMED)),
            (InternalError, Internal, Some(R::NOT_FORWARDED)),
        ] {
            let mut e = Error::new(etype.clone());
            e.esource = source;
            assert_eq!(R::of_error(&e), expect, "{etype:?}");
        }
        assert_eq!(
            Refusal::NO_HEALTHY_NODE.err::<()>().unwrap_err().etype(),
            &ErrorType::HTTPStatus(503)
        );
    }
}
