//! `POST …/heartbeat` (stay in the members list), `POST …/leave` (with
//! the token in the header, or in the body of a beacon), and the edge's
//! `POST /v1/internal/presence` (many guests of a room at once).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chatty_shared::wire::{PresenceBatch, MAX_PRESENCE_TOKENS};

use super::{bearer, json};
use crate::body::JsonBody;
use crate::chat::Chat;
use crate::error::ApiError;
use crate::token::MAX_TOKEN_LEN;

/// Largest presence batch body: two full lists of the longest tokens
/// looked at, quoted and comma-separated, and room for the rest. Longer
/// lists are refused by count (413) once parsed.
pub const BATCH_BODY_BYTES: usize = 2 * MAX_PRESENCE_TOKENS * (MAX_TOKEN_LEN + 3) + 1024;

pub async fn heartbeat(
    chat: web::Data<Chat>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (site, room) = path.into_inner();
    chat.heartbeat(&site, &room, bearer(&req)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The body a page sends with `navigator.sendBeacon`, which cannot set an
/// `Authorization` header: `{"token": "…"}`, whatever its content type.
#[derive(serde::Deserialize)]
struct BeaconBody {
    token: String,
}

/// Takes the token from `Authorization: Bearer …` or, for a beacon sent as
/// the page goes away, from the body.
pub async fn leave(
    chat: web::Data<Chat>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (site, room) = path.into_inner();
    let from_body = match bearer(&req) {
        Some(_) => None,
        None => serde_json::from_slice::<BeaconBody>(&body)
            .ok()
            .map(|b| b.token),
    };
    chat.leave(&site, &room, bearer(&req).or(from_body.as_deref()))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /v1/internal/presence`: no caller authentication, the tokens
/// authenticate themselves (the edge refuses `/v1/internal/…` from its
/// clients).
pub async fn batch(
    chat: web::Data<Chat>,
    body: JsonBody<PresenceBatch, BATCH_BODY_BYTES>,
) -> Result<HttpResponse, ApiError> {
    let counts = chat.presence_batch(&body.0).await?;
    Ok(json(StatusCode::OK, &counts))
}
