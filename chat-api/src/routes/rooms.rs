//! `POST /v1/sites/{site}/rooms/{room}/join`: a nickname (or the host
//! site's user token) in; the member, a guest token and the initial sync
//! out.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chatty_shared::wire::JoinRequest;

use super::{bearer, check_origin, client_ip, etag_header, json};
use crate::body::JsonBody;
use crate::chat::Chat;
use crate::error::ApiError;

pub async fn join(
    chat: web::Data<Chat>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: JsonBody<JoinRequest>,
) -> Result<HttpResponse, ApiError> {
    let (site, room) = path.into_inner();
    let rec = chat.site(&site).await?;
    check_origin(&req, &rec.origins)?;
    let res = chat
        .join(&site, &room, &body.0, bearer(&req), &client_ip(&req))
        .await?;
    let etag = etag_header(&res.etag);
    let mut out = json(StatusCode::OK, &res);
    out.headers_mut().insert(etag.0, etag.1);
    Ok(out)
}
