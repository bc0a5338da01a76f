//! `GET /healthz` (alive), `GET /readyz` (the store answers and the node is
//! not draining; the bus is reported but not required) and `GET /metrics` (Prometheus text).

use actix_web::http::header::ContentType;
use actix_web::{web, HttpResponse};

use crate::chat::Chat;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

pub async fn readyz(chat: web::Data<Chat>) -> HttpResponse {
    let ready = chat.ready().await;
    let draining = chat.is_draining();
    let body = serde_json::json!({
        "store": if ready.store { "ok" } else { "down" },
        "bus": if ready.bus { "ok" } else { "down" },
        "draining": draining,
    });
    if ready.store && !draining {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header((actix_web::http::header::RETRY_AFTER, 1))
            .json(body)
    }
}

pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType(
            "text/plain; version=0.0.4; charset=utf-8"
                .parse()
                .unwrap_or(mime_text()),
        ))
        .body(chatty_shared::telemetry::render_metrics())
}

fn mime_text() -> actix_web::mime::Mime {
    actix_web::mime::TEXT_PLAIN_UTF_8
}
