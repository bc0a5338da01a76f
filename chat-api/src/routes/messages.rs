//! `GET …/messages?after=` (the poll, with ETag and 304) and
//! `POST …/messages` (a send, idempotent by `client_id`).

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chatty_shared::parse_decimal;
use chatty_shared::wire::SendRequest;

use super::{bearer, check_origin, client_ip, conditional, etag_header, if_none_match, json};
use crate::body::JsonBody;
use crate::chat::{Chat, Poll};
use crate::error::ApiError;

/// The `after` query parameter: absent is 0; anything but a non-negative
/// integer is a 400.
fn after(req: &HttpRequest) -> Result<u64, ApiError> {
    let q = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map_err(|_| ApiError::BadRequest("malformed query string".into()))?;
    match q.get("after") {
        None => Ok(0),
        Some(v) => parse_decimal(v)
            .ok_or_else(|| ApiError::BadRequest("after must be a non-negative integer".into())),
    }
}

pub async fn poll(
    chat: web::Data<Chat>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (site, room) = path.into_inner();
    let after = after(&req)?;
    let inm = if_none_match(&req);
    let polled = chat.poll(&site, &room, after, &inm).await?;
    // A partial page (`more`) carries no ETag: the room's version is ahead
    // of what the page holds, and a client (or an edge) holding it would be
    // told "nothing new" for the events it has not read yet.
    let etag = match &polled.poll {
        Poll::Fresh(page) if page.more => None,
        _ => Some(polled.version.etag()),
    };
    Ok(conditional(polled.poll, etag))
}

pub async fn send(
    chat: web::Data<Chat>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: JsonBody<SendRequest>,
) -> Result<HttpResponse, ApiError> {
    let (site, room) = path.into_inner();
    let rec = chat.site(&site).await?;
    check_origin(&req, &rec.origins)?;
    let SendRequest { text, client_id } = body.0;
    let sent = chat
        .send(
            &site,
            &room,
            bearer(&req),
            text,
            client_id,
            &client_ip(&req),
        )
        .await?;
    let status = if sent.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut res = json(status, &sent.event);
    let (name, value) = etag_header(sent.version.etag().as_str());
    res.headers_mut().insert(name, value);
    Ok(res)
}
