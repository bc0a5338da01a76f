//! The browser side, compiled in: the widget script, the chat frame (with
//! its Content-Security-Policy, `frame-ancestors` from the site's origins),
//! its script and styles, and the demo page.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpResponse};

use crate::chat::Chat;
use crate::error::ApiError;

const WIDGET_JS: &str = include_str!("../../assets/widget.js");
const FRAME_HTML: &str = include_str!("../../assets/frame.html");
/// The frame's script, served as one: the parts in `assets/frame/`, in this
/// order, inside one strict-mode function whose scope they share.
const FRAME_JS: &str = concat!(
    "(() => {\n'use strict';\n\n",
    include_str!("../../assets/frame/page.js"),
    include_str!("../../assets/frame/state.js"),
    include_str!("../../assets/frame/api.js"),
    include_str!("../../assets/frame/view.js"),
    include_str!("../../assets/frame/join.js"),
    include_str!("../../assets/frame/reader.js"),
    include_str!("../../assets/frame/outbox.js"),
    include_str!("../../assets/frame/start.js"),
    "})();\n",
);
const FRAME_CSS: &str = include_str!("../../assets/frame.css");
const DEMO_HTML: &str = include_str!("../../assets/demo.html");

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

/// The frame's policy before `frame-ancestors`.
pub const FRAME_CSP: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; \
img-src 'self' data:; base-uri 'none'; form-action 'none'";

fn asset(body: &'static str, content_type: &'static str, cache: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static(content_type)))
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static(cache)))
        .insert_header((
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .body(body)
}

pub async fn widget_js() -> HttpResponse {
    asset(WIDGET_JS, JS, "public, max-age=300")
}

pub async fn frame_js() -> HttpResponse {
    asset(FRAME_JS, JS, "public, max-age=300")
}

pub async fn frame_css() -> HttpResponse {
    asset(FRAME_CSS, CSS, "public, max-age=300")
}

/// The full CSP of a site's frame. Origins were validated when the site was
/// created (no spaces, semicolons or commas), so they are safe here.
pub fn frame_csp(origins: &[String]) -> String {
    let mut csp = String::from(FRAME_CSP);
    csp.push_str("; frame-ancestors");
    let mut any = false;
    for o in origins {
        if crate::validate::origin_pattern(o).is_ok() {
            csp.push(' ');
            csp.push_str(o);
            any = true;
        }
    }
    if !any {
        csp.push_str(" 'none'");
    }
    csp
}

pub async fn frame(
    chat: web::Data<Chat>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (site, room) = path.into_inner();
    let (_key, rec) = chat.room(&site, &room).await?;
    let csp = HeaderValue::from_str(&frame_csp(&rec.origins)).map_err(|_| ApiError::not_found())?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static(HTML)))
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
        .insert_header((header::CONTENT_SECURITY_POLICY, csp))
        .insert_header((
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .insert_header((
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .body(FRAME_HTML))
}

/// `/`: the demo page, only while the demo site is on.
pub async fn demo(chat: web::Data<Chat>) -> Result<HttpResponse, ApiError> {
    if !chat.settings.demo_site {
        return Err(ApiError::not_found());
    }
    Ok(asset(DEMO_HTML, HTML, "no-cache"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csp_lists_the_origins() {
        let csp = frame_csp(&["http://localhost:*".into(), "https://example.com".into()]);
        assert!(csp.starts_with("default-src 'self'; script-src 'self';"));
        assert!(csp.ends_with("; frame-ancestors http://localhost:* https://example.com"));
        assert!(!csp.contains("unsafe-inline"));
        let csp = frame_csp(&["bad; script-src *".into()]);
        assert!(csp.ends_with("frame-ancestors 'none'"));
    }
}
