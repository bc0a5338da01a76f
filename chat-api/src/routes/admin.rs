//! Administration: sites (operator token) and moderation — delete a
//! message, ban a guest, set limits, rules and a room's slow mode,
//! register user-token keys, erase a member (the site's secret).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chatty_shared::wire::{
    AddUserKeyRequest, BanRequest, CreateSiteRequest, EraseRequest, RoomSlowMode, SiteLimits,
    SiteRules,
};

use super::{bearer, etag_header, json};
use crate::body::JsonBody;
use crate::chat::Chat;
use crate::error::ApiError;

pub async fn create_site(
    chat: web::Data<Chat>,
    req: HttpRequest,
    body: JsonBody<CreateSiteRequest>,
) -> Result<HttpResponse, ApiError> {
    // The token is checked before the body is looked at.
    chat.operator(bearer(&req))?;
    let created = chat.create_site(body.0, bearer(&req)).await?;
    Ok(json(StatusCode::CREATED, &created))
}

pub async fn list_sites(chat: web::Data<Chat>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let sites = chat.list_sites(bearer(&req)).await?;
    Ok(json(StatusCode::OK, &sites))
}

pub async fn delete_message(
    chat: web::Data<Chat>,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (site, room, seq) = path.into_inner();
    let deleted = chat.delete(&site, &room, &seq, bearer(&req)).await?;
    let mut res = json(StatusCode::OK, &deleted.event);
    let (name, value) = etag_header(deleted.version.etag().as_str());
    res.headers_mut().insert(name, value);
    Ok(res)
}

pub async fn ban(
    chat: web::Data<Chat>,
    req: HttpRequest,
    path: web::Path<String>,
    body: JsonBody<BanRequest>,
) -> Result<HttpResponse, ApiError> {
    chat.ban(&path, &body.0.member_id, bearer(&req)).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn set_limits(
    chat: web::Data<Chat>,
    req: HttpRequest,
    path: web::Path<String>,
    body: JsonBody<SiteLimits>,
) -> Result<HttpResponse, ApiError> {
    let limits = chat.set_limits(&path, body.0, bearer(&req)).await?;
    Ok(json(StatusCode::OK, &limits))
}

pub async fn get_rules(
    chat: web::Data<Chat>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let rules = chat.rules(&path, bearer(&req)).await?;
    Ok(json(StatusCode::OK, &rules))
}

/// Largest body of `PUT …/rules` (413 `too_large` beyond): room for both
/// lists full of the longest entries written plainly (about 100 KiB),
/// with some to spare for non-ASCII text; never megabytes from a client
/// that has not yet shown the site's secret.
pub const RULES_BODY_BYTES: usize = 256 * 1024;

pub async fn set_rules(
    chat: web::Data<Chat>,
    req: HttpRequest,
    path: web::Path<String>,
    body: JsonBody<SiteRules, RULES_BODY_BYTES>,
) -> Result<HttpResponse, ApiError> {
    let rules = chat.set_rules(&path, body.0, bearer(&req)).await?;
    Ok(json(StatusCode::OK, &rules))
}

pub async fn set_room_slow_mode(
    chat: web::Data<Chat>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: JsonBody<RoomSlowMode>,
) -> Result<HttpResponse, ApiError> {
    let (site, room) = path.into_inner();
    let set = chat
        .set_room_slow_mode(&site, &room, body.0, bearer(&req))
        .await?;
    Ok(json(StatusCode::OK, &set))
}

pub async fn list_user_keys(
    chat: web::Data<Chat>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let keys = chat.list_user_keys(&path, bearer(&req)).await?;
    Ok(json(StatusCode::OK, &keys))
}

pub async fn add_user_key(
    chat: web::Data<Chat>,
    req: HttpRequest,
    path: web::Path<String>,
    body: JsonBody<AddUserKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    let key = chat.add_user_key(&path, body.0, bearer(&req)).await?;
    Ok(json(StatusCode::CREATED, &key))
}

pub async fn remove_user_key(
    chat: web::Data<Chat>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (site, kid) = path.into_inner();
    chat.remove_user_key(&site, &kid, bearer(&req)).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn erase(
    chat: web::Data<Chat>,
    req: HttpRequest,
    path: web::Path<String>,
    body: JsonBody<EraseRequest>,
) -> Result<HttpResponse, ApiError> {
    let erased = chat.erase(&path, &body.0.member_id, bearer(&req)).await?;
    Ok(json(StatusCode::OK, &erased))
}
