//! `ApiError`: every way a request can fail, mapped once to a status, an error
//! code and the JSON body `{"error":{"code","message"}}` (with `Retry-After`
//! on 429, 503 and a timeout's 403).

use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use chatty_shared::retry_after_secs;
use chatty_shared::wire::ErrorBody;

/// How long a client is told to wait when a backend is down.
pub const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A failed request. The message is shown to the client: it never carries
/// internal details (those go to the log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (query, headers, content type).
    #[error("{0}")]
    BadRequest(String),
    /// The body is not JSON.
    #[error("{0}")]
    InvalidJson(String),
    /// The body is JSON but a field is missing, of the wrong type or refused.
    #[error("{0}")]
    InvalidField(String),
    /// The token or secret is missing, forged, expired or for another room.
    #[error("{0}")]
    Unauthorized(String),
    /// The guest is banned from this site.
    #[error("you are banned from this site")]
    Banned,
    /// A moderator timed the member out: no sending until `until`.
    #[error("you are timed out until {until}")]
    TimedOut {
        retry_after: Duration,
        until: String,
    },
    /// Not allowed (e.g. an origin the site does not list).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A resource with that name already exists.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("too many requests")]
    RateLimited { retry_after: Duration },
    /// Slow mode: one message per member per period in this room.
    #[error("slow mode is on: wait before sending again")]
    SlowMode { retry_after: Duration },
    /// The site's rules refuse a word or pattern in the text.
    #[error("the message holds a word this site does not allow")]
    BlockedText,
    /// The site does not allow links from this sender.
    #[error("links are not allowed here")]
    LinksNotAllowed,
    /// A backend (the store) did not answer in time.
    #[error("service unavailable, retry later")]
    Unavailable,
}

impl ApiError {
    /// The stable error code of the body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidField(_) => "invalid_field",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Banned => "banned",
            ApiError::TimedOut { .. } => "timed_out",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooLarge(_) => "too_large",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::SlowMode { .. } => "slow_mode",
            ApiError::BlockedText => "blocked_text",
            ApiError::LinksNotAllowed => "links_not_allowed",
            ApiError::Unavailable => "unavailable",
        }
    }

    pub fn not_found() -> Self {
        ApiError::NotFound("not found".into())
    }

    pub fn unauthorized() -> Self {
        ApiError::Unauthorized("missing or invalid token".into())
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after }
            | ApiError::SlowMode { retry_after }
            | ApiError::TimedOut { retry_after, .. } => Some(*retry_after),
            ApiError::Unavailable => Some(UNAVAILABLE_RETRY_AFTER),
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::InvalidJson(_) | ApiError::InvalidField(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Banned | ApiError::TimedOut { .. } | ApiError::Forbidden(_) => {
                StatusCode::FORBIDDEN
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BlockedText | ApiError::LinksNotAllowed => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited { .. } | ApiError::SlowMode { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let body = ErrorBody::new(self.code(), &self.to_string());
        let mut res = HttpResponse::build(self.status_code());
        res.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        if let Some(after) = self.retry_after() {
            res.insert_header((header::RETRY_AFTER, retry_after_secs(after)));
        }
        if matches!(self, ApiError::Unauthorized(_)) {
            res.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        res.json(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    fn body_of(e: &ApiError) -> serde_json::Value {
        let res = e.error_response();
        let bytes = res.into_body().try_into_bytes().unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn statuses_and_codes() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::BadRequest("x".into()), 400, "bad_request"),
            (ApiError::InvalidJson("x".into()), 400, "invalid_json"),
            (ApiError::InvalidField("x".into()), 400, "invalid_field"),
            (ApiError::unauthorized(), 401, "unauthorized"),
            (ApiError::Banned, 403, "banned"),
            (
                ApiError::TimedOut {
                    retry_after: Duration::from_secs(60),
                    until: "2030-01-01 00:00:00 UTC".into(),
                },
                403,
                "timed_out",
            ),
            (ApiError::Forbidden("x".into()), 403, "forbidden"),
            (ApiError::not_found(), 404, "not_found"),
            (ApiError::MethodNotAllowed, 405, "method_not_allowed"),
            (ApiError::Conflict("x".into()), 409, "conflict"),
            (ApiError::TooLarge("x".into()), 413, "too_large"),
            (
                ApiError::RateLimited {
                    retry_after: Duration::from_millis(1500),
                },
                429,
                "rate_limited",
            ),
            (
                ApiError::SlowMode {
                    retry_after: Duration::from_secs(7),
                },
                429,
                "slow_mode",
            ),
            (ApiError::BlockedText, 422, "blocked_text"),
            (ApiError::LinksNotAllowed, 422, "links_not_allowed"),
            (ApiError::Unavailable, 503, "unavailable"),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status_code().as_u16(), status, "{err:?}");
            let body = body_of(&err);
            assert_eq!(body["error"]["code"], code);
            assert!(body["error"]["message"].is_string());
        }
    }

    #[test]
    fn retry_after_header() {
        let res = ApiError::RateLimited {
            retry_after: Duration::from_millis(1500),
        }
        .error_response();
        assert_eq!(res.headers().get(header::RETRY_AFTER).unwrap(), "2");
        let res = ApiError::SlowMode {
            retry_after: Duration::from_millis(4200),
        }
        .error_response();
        assert_eq!(res.headers().get(header::RETRY_AFTER).unwrap(), "5");
        let res = ApiError::Unavailable.error_response();
        assert_eq!(res.headers().get(header::RETRY_AFTER).unwrap(), "1");
        let res = ApiError::TimedOut {
            retry_after: Duration::from_millis(59_100),
            until: "x".into(),
        }
        .error_response();
        assert_eq!(res.headers().get(header::RETRY_AFTER).unwrap(), "60");
        let res = ApiError::not_found().error_response();
        assert!(res.headers().get(header::RETRY_AFTER).is_none());
        assert_eq!(retry_after_secs(Duration::from_millis(10)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }
}
