//! `GET …/members`: who is here, with the members ETag and 304.

use actix_web::{web, HttpRequest, HttpResponse};
use chatty_shared::members_etag;

use super::{conditional, if_none_match};
use crate::chat::Chat;
use crate::error::ApiError;

pub async fn list(
    chat: web::Data<Chat>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (site, room) = path.into_inner();
    let inm = if_none_match(&req);
    let polled = chat.members(&site, &room, &inm).await?;
    let etag = members_etag(polled.version);
    Ok(conditional(polled.poll, Some(etag)))
}
