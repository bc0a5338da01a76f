//! The HTTP routes, one file per resource, and the helpers they share:
//! the client IP, the bearer token, `If-None-Match` values, the answer to a
//! conditional GET and the JSON answers for unknown paths and methods.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chatty_shared::EtagBuf;

use crate::chat::Poll;
use crate::error::ApiError;

pub mod admin;
pub mod assets;
pub mod health;
pub mod members;
pub mod messages;
pub mod moderation;
pub mod openapi;
pub mod presence;
pub mod rooms;

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    assets::prepare();
    const ROOM: &str = "/v1/sites/{site}/rooms/{room}";
    cfg.service(
        web::resource(format!("{ROOM}/join"))
            .route(web::post().to(rooms::join))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource(format!("{ROOM}/messages"))
            .route(web::get().to(messages::poll))
            .route(web::post().to(messages::send))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource(format!("{ROOM}/messages/{{seq}}"))
            .route(web::delete().to(admin::delete_message))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource(format!("{ROOM}/members"))
            .route(web::get().to(members::list))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource(format!("{ROOM}/heartbeat"))
            .route(web::post().to(presence::heartbeat))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource(format!("{ROOM}/leave"))
            .route(web::post().to(presence::leave))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/internal/presence")
            .route(web::post().to(presence::batch))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource(format!("{ROOM}/frame"))
            .route(web::get().to(assets::frame))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/sites/{site}/bans")
            .route(web::post().to(admin::ban))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/sites/{site}/user-keys")
            .route(web::get().to(admin::list_user_keys))
            .route(web::post().to(admin::add_user_key))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/sites/{site}/user-keys/{kid}")
            .route(web::delete().to(admin::remove_user_key))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/sites/{site}/limits")
            .route(web::put().to(admin::set_limits))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/sites/{site}/rules")
            .route(web::get().to(admin::get_rules))
            .route(web::put().to(admin::set_rules))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource(format!("{ROOM}/slow-mode"))
            .route(web::put().to(admin::set_room_slow_mode))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource(format!("{ROOM}/moderation"))
            .route(web::post().to(moderation::moderate))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/sites/{site}/audit")
            .route(web::get().to(moderation::audit))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/admin/sites")
            .route(web::get().to(admin::list_sites))
            .route(web::post().to(admin::create_site))
            .default_service(web::to(method_not_allowed)),
    )
    .service(get("/v1/widget.js", assets::widget_js))
    .service(get("/v1/frame.js", assets::frame_js))
    .service(get("/v1/frame.css", assets::frame_css))
    .service(get("/v1/openapi.json", openapi::document))
    .service(get("/", assets::demo))
    .service(get("/healthz", health::healthz))
    .service(get("/readyz", health::readyz))
    .service(get("/metrics", health::metrics));
}

fn get<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args> + Clone,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
        .default_service(web::to(method_not_allowed))
}

/// JSON 405 for a known path with another method.
pub async fn method_not_allowed() -> HttpResponse {
    ApiError::MethodNotAllowed.error_response()
}

/// JSON 404 for an unknown path.
pub async fn not_found() -> HttpResponse {
    ApiError::not_found().error_response()
}

/// The bearer token of a request, if any.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    crate::token::bearer(
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )
}

/// The client's IP for rate limiting: the last `X-Forwarded-For` hop (the
/// one the edge in front of this node appended), else the peer address.
/// API nodes are meant to be reached only through the edge.
pub fn client_ip(req: &HttpRequest) -> String {
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .last()
        .map(str::trim)
        .and_then(|v| v.parse::<std::net::IpAddr>().ok());
    match forwarded {
        Some(ip) => ip.to_string(),
        None => req
            .peer_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string()),
    }
}

/// Every `If-None-Match` field value of a request.
pub fn if_none_match(req: &HttpRequest) -> Vec<&[u8]> {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .map(HeaderValue::as_bytes)
        .collect()
}

/// Refuses a browser request from an origin that is neither this service
/// nor one the site lists (requests without `Origin` are not from a
/// cross-origin page and pass).
pub fn check_origin(req: &HttpRequest, site_origins: &[String]) -> Result<(), ApiError> {
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    let own_host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    let same = origin
        .split_once("://")
        .is_some_and(|(_, authority)| Some(authority) == own_host);
    if same || crate::validate::origin_allowed(site_origins, origin) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "origin not allowed for this site".into(),
        ))
    }
}

/// A JSON answer with `Cache-Control: no-store`.
pub fn json<T: serde::Serialize>(status: actix_web::http::StatusCode, body: &T) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .json(body)
}

/// The answer to a conditional GET of a room resource: 304, or 200 with the
/// JSON body; `Cache-Control: no-cache` either way, and the ETag when
/// there is one.
pub(crate) fn conditional<T: serde::Serialize>(
    poll: Poll<T>,
    etag: Option<EtagBuf>,
) -> HttpResponse {
    let mut res = match poll {
        Poll::NotModified => HttpResponse::NotModified().finish(),
        Poll::Fresh(body) => HttpResponse::Ok().json(body),
    };
    let h = res.headers_mut();
    if let Some(etag) = etag {
        let (name, value) = etag_header(etag.as_str());
        h.insert(name, value);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// Sets an ETag header from an ASCII tag.
pub fn etag_header(tag: &str) -> (header::HeaderName, HeaderValue) {
    (
        header::ETAG,
        HeaderValue::from_str(tag).unwrap_or_else(|_| HeaderValue::from_static("\"\"")),
    )
}
