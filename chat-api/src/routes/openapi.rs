//! `GET /v1/openapi.json`: the OpenAPI 3.0 document of the whole API.

use actix_web::http::header::{self, HeaderValue};
use actix_web::HttpResponse;

/// The document, checked in beside the code.
pub const DOCUMENT: &str = include_str!("../openapi.json");

pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ))
        .insert_header((
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        ))
        .body(DOCUMENT)
}
