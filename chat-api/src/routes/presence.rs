//! `POST …/heartbeat` (stay in the members list) and `POST …/leave` (with
//! the token in the header, or in the body of a beacon).

use actix_web::{web, HttpRequest, HttpResponse};

use super::bearer;
use crate::chat::Chat;
use crate::error::ApiError;

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
