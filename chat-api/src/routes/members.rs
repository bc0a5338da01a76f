//! `GET …/members`: who is here, with the members ETag and 304.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use chatty_shared::etag::members_etag;
use chatty_shared::wire::MembersList;

use super::{etag_header, if_none_match};
use crate::error::ApiError;
use crate::rooms::{Chat, Poll};

pub async fn list(
    chat: web::Data<Chat>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (site, room) = path.into_inner();
    let inm = if_none_match(&req);
    let (poll, version) = chat.members(&site, &room, &inm).await?;
    let mut res = match poll {
        Poll::NotModified => HttpResponse::NotModified().finish(),
        Poll::Fresh(members) => HttpResponse::Ok().json(MembersList { members }),
    };
    let h = res.headers_mut();
    let (name, value) = etag_header(members_etag(version).as_str());
    h.insert(name, value);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(res)
}
