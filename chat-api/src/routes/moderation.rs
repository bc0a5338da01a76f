//! Moderation: `POST …/rooms/{room}/moderation` (a moderator's guest
//! token or the site's secret) and `GET /v1/sites/{site}/audit` (the
//! site's secret). `DELETE …/messages/{seq}` is in `admin.rs`.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chatty_shared::parse_decimal;
use chatty_shared::wire::{ModerationRequest, ModerationResponse};

use super::{bearer, etag_header, json};
use crate::body::JsonBody;
use crate::chat::Chat;
use crate::error::ApiError;

/// Audit lines answered when the query names no `limit`.
const DEFAULT_AUDIT_LIMIT: usize = 100;

pub async fn moderate(
    chat: web::Data<Chat>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: JsonBody<ModerationRequest>,
) -> Result<HttpResponse, ApiError> {
    let (site, room) = path.into_inner();
    let done = chat.moderate(&site, &room, body.0, bearer(&req)).await?;
    let mut res = json(StatusCode::OK, &ModerationResponse { event: done.event });
    let (name, value) = etag_header(done.version.etag().as_str());
    res.headers_mut().insert(name, value);
    Ok(res)
}

/// The `limit` query parameter: absent is [`DEFAULT_AUDIT_LIMIT`].
fn limit(req: &HttpRequest) -> Result<usize, ApiError> {
    let q = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map_err(|_| ApiError::BadRequest("malformed query".into()))?;
    match q.get("limit") {
        None => Ok(DEFAULT_AUDIT_LIMIT),
        Some(v) => parse_decimal::<u64>(v)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| ApiError::BadRequest("limit must be a positive integer".into())),
    }
}

pub async fn audit(
    chat: web::Data<Chat>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let limit = limit(&req)?;
    let lines = chat.audit(&path, limit, bearer(&req)).await?;
    Ok(json(StatusCode::OK, &lines))
}
