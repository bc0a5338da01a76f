//! The browser side, compiled in: the widget script, the chat frame (with
//! its Content-Security-Policy, `frame-ancestors` from the site's origins),
//! its script and styles, and the demo page — each compressed once per
//! process (gzip and brotli), chosen by `Accept-Encoding`, with a strong
//! `ETag` per encoding and `304` on revalidation.

use std::sync::LazyLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

use crate::chat::Chat;
use crate::error::ApiError;

/// The widget: the table of strings and the widget's own code inside one
/// strict-mode function (the widget's labels come from the same table as
/// the frame's).
const WIDGET_JS: &str = concat!(
    "(() => {\n'use strict';\n\n",
    include_str!("../../assets/frame/strings.js"),
    include_str!("../../assets/widget.js"),
    "})();\n",
);
/// The frame's page; `{{FRAME_CSS}}` and `{{FRAME_JS}}` become the
/// versioned addresses of its stylesheet and script.
const FRAME_HTML: &str = include_str!("../../assets/frame.html");
/// The frame's script, served as one: the parts in `assets/frame/`, in this
/// order, inside one strict-mode function whose scope they share.
const FRAME_JS: &str = concat!(
    "(() => {\n'use strict';\n\n",
    include_str!("../../assets/frame/strings.js"),
    include_str!("../../assets/frame/page.js"),
    include_str!("../../assets/frame/state.js"),
    include_str!("../../assets/frame/api.js"),
    include_str!("../../assets/frame/view.js"),
    include_str!("../../assets/frame/join.js"),
    include_str!("../../assets/frame/reader.js"),
    include_str!("../../assets/frame/outbox.js"),
    include_str!("../../assets/frame/moderation.js"),
    include_str!("../../assets/frame/start.js"),
    "})();\n",
);
const FRAME_CSS: &str = include_str!("../../assets/frame.css");
const DEMO_HTML: &str = include_str!("../../assets/demo.html");

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

/// The widget's address never changes, so browsers keep it a short while
/// and then revalidate (a `304` without a body).
const SHORT: &str = "public, max-age=300";
/// The frame's script and stylesheet asked for with the version this node
/// serves (`?v=`, as the frame's page names them): that address always
/// stands for the same bytes.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Pages: always revalidated (cheap with the `ETag`).
const REVALIDATE: &str = "no-cache";

/// The frame's policy before `frame-ancestors`.
pub const FRAME_CSP: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; \
img-src 'self' data:; base-uri 'none'; form-action 'none'";

/// A content coding this node can answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Brotli,
}

impl Encoding {
    /// Ours, best first when a client likes several equally.
    const PREFERENCE: [Encoding; 3] = [Encoding::Brotli, Encoding::Gzip, Encoding::Identity];

    fn token(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Brotli => "br",
        }
    }

    /// What the ETag of this form ends with: each encoding is other bytes,
    /// so each has its own strong validator.
    fn etag_suffix(self) -> &'static str {
        match self {
            Encoding::Identity => "",
            Encoding::Gzip => "-gz",
            Encoding::Brotli => "-br",
        }
    }
}

/// Picks the coding for an `Accept-Encoding` (all its field values): the
/// one the client weighs highest (`q`), ours breaking ties; a coding at
/// `q=0` is refused, `*` stands for any coding not named. Without the
/// header, or with one that names nothing we have, identity.
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Encoding {
    let mut weights: [Option<u16>; 3] = [None; 3];
    let mut star: Option<u16> = None;
    for value in values {
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let mut q = 1000u16;
            for param in parts {
                if let Some((k, v)) = param.split_once('=') {
                    if k.trim().eq_ignore_ascii_case("q") {
                        q = parse_qvalue(v.trim()).unwrap_or(0);
                    }
                }
            }
            let slot = match name.as_str() {
                "br" => Some(0),
                "gzip" | "x-gzip" => Some(1),
                "identity" => Some(2),
                "*" => {
                    star = Some(q);
                    None
                }
                _ => None,
            };
            if let Some(i) = slot {
                weights[i] = Some(q);
            }
        }
    }
    let weight = |i: usize| -> u16 {
        match (weights[i], star) {
            (Some(q), _) => q,
            (None, Some(q)) => q,
            // Identity is acceptable unless refused; other codings only when named.
            (None, None) if i == 2 => 1,
            (None, None) => 0,
        }
    };
    let mut best = Encoding::Identity;
    let mut best_q = 0u16;
    for (i, enc) in Encoding::PREFERENCE.iter().enumerate() {
        let q = weight(i);
        if q > best_q {
            best = *enc;
            best_q = q;
        }
    }
    best
}

/// A `qvalue` (`0`, `0.5`, `1.000`) in thousandths; `None` when malformed.
fn parse_qvalue(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole = match int {
        "0" => 0u16,
        "1" => 1000,
        _ => return None,
    };
    let mut thousandths = 0u16;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    if whole == 1000 && thousandths > 0 {
        return None;
    }
    Some(whole + thousandths)
}

/// One form of an asset: its bytes in one encoding and their validator.
struct Form {
    encoding: Encoding,
    body: web::Bytes,
    etag: String,
}

/// One file the browser loads, in every encoding worth sending.
pub struct Asset {
    content_type: &'static str,
    /// Hex of the first bytes of the SHA-256 of the original text: the
    /// version in `?v=` and the start of every ETag.
    version: String,
    forms: Vec<Form>,
}

impl Asset {
    fn new(text: &str, content_type: &'static str) -> Asset {
        let raw = text.as_bytes();
        let version = hex(&Sha256::digest(raw)[..8]);
        let mut forms = vec![Form {
            encoding: Encoding::Identity,
            body: web::Bytes::copy_from_slice(raw),
            etag: format!("\"{version}\""),
        }];
        for encoding in [Encoding::Gzip, Encoding::Brotli] {
            let body = compress(raw, encoding);
            // A form no smaller than the original is not worth its header.
            if body.len() < raw.len() {
                forms.push(Form {
                    encoding,
                    body: body.into(),
                    etag: format!("\"{version}{}\"", encoding.etag_suffix()),
                });
            }
        }
        Asset {
            content_type,
            version,
            forms,
        }
    }

    /// The version named in the address of a versioned asset.
    pub fn version(&self) -> &str {
        &self.version
    }

    fn form(&self, encoding: Encoding) -> &Form {
        self.forms
            .iter()
            .find(|f| f.encoding == encoding)
            .unwrap_or(&self.forms[0])
    }

    /// The answer to `req`: the form its `Accept-Encoding` picks, `304`
    /// when its `If-None-Match` names that form's ETag (with `extra`
    /// mixed into the ETag: headers that change what the answer means,
    /// like the frame's policy).
    fn respond(&self, req: &HttpRequest, cache: &'static str, extra: Option<&str>) -> HttpResponse {
        let encoding = negotiate(
            req.headers()
                .get_all(header::ACCEPT_ENCODING)
                .map(HeaderValue::as_bytes),
        );
        let form = self.form(encoding);
        let etag = match extra {
            None => form.etag.clone(),
            Some(extra) => {
                let mixed = hex(&Sha256::digest(extra.as_bytes())[..4]);
                format!(
                    "\"{}.{mixed}{}\"",
                    self.version,
                    form.encoding.etag_suffix()
                )
            }
        };
        let fresh = !chatty_shared::if_none_match(super::if_none_match(req), etag.as_bytes());
        let mut res = if fresh {
            let mut b = HttpResponse::Ok();
            b.insert_header((
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            ));
            if form.encoding != Encoding::Identity {
                b.insert_header((
                    header::CONTENT_ENCODING,
                    HeaderValue::from_static(form.encoding.token()),
                ));
            }
            b.body(form.body.clone())
        } else {
            HttpResponse::build(StatusCode::NOT_MODIFIED).finish()
        };
        let h = res.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&etag) {
            h.insert(header::ETAG, v);
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        res
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn compress(raw: &[u8], encoding: Encoding) -> Vec<u8> {
    use std::io::Write;
    match encoding {
        Encoding::Identity => raw.to_vec(),
        Encoding::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            // Writing into a Vec cannot fail.
            enc.write_all(raw).expect("gzip into memory");
            enc.finish().expect("gzip into memory")
        }
        Encoding::Brotli => {
            let mut out = Vec::new();
            let params = brotli::enc::BrotliEncoderParams {
                quality: 11,
                lgwin: 22,
                ..Default::default()
            };
            brotli::BrotliCompress(&mut &raw[..], &mut out, &params).expect("brotli into memory");
            out
        }
    }
}

/// Every asset, compressed the first time any is asked for (or at start-up,
/// through [`prepare`]).
struct Assets {
    widget_js: Asset,
    frame_js: Asset,
    frame_css: Asset,
    frame_html: Asset,
    demo_html: Asset,
}

static ASSETS: LazyLock<Assets> = LazyLock::new(|| {
    let frame_js = Asset::new(FRAME_JS, JS);
    let frame_css = Asset::new(FRAME_CSS, CSS);
    let html = FRAME_HTML
        .replace(
            "{{FRAME_CSS}}",
            &format!("/v1/frame.css?v={}", frame_css.version()),
        )
        .replace(
            "{{FRAME_JS}}",
            &format!("/v1/frame.js?v={}", frame_js.version()),
        );
    Assets {
        widget_js: Asset::new(WIDGET_JS, JS),
        frame_html: Asset::new(&html, HTML),
        frame_js,
        frame_css,
        demo_html: Asset::new(DEMO_HTML, HTML),
    }
});

/// Compresses every asset now rather than on the first request.
pub fn prepare() {
    LazyLock::force(&ASSETS);
}

/// Whether `req` asks for `asset` by the version this node serves.
fn versioned(req: &HttpRequest, asset: &Asset) -> bool {
    req.query_string()
        .split('&')
        .any(|kv| kv.strip_prefix("v=") == Some(asset.version()))
}

pub async fn widget_js(req: HttpRequest) -> HttpResponse {
    ASSETS.widget_js.respond(&req, SHORT, None)
}

pub async fn frame_js(req: HttpRequest) -> HttpResponse {
    let a = &ASSETS.frame_js;
    let cache = if versioned(&req, a) { IMMUTABLE } else { SHORT };
    a.respond(&req, cache, None)
}

pub async fn frame_css(req: HttpRequest) -> HttpResponse {
    let a = &ASSETS.frame_css;
    let cache = if versioned(&req, a) { IMMUTABLE } else { SHORT };
    a.respond(&req, cache, None)
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

/// The chat frame of a room. Its query (`?transport=`, `?lang=`) is read
/// by the frame's script, which falls back to its defaults for any value
/// it does not know, so the page itself is the same for every query.
pub async fn frame(
    req: HttpRequest,
    chat: web::Data<Chat>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (site, room) = path.into_inner();
    let (_key, rec) = chat.room(&site, &room).await?;
    let csp_text = frame_csp(&rec.origins);
    let csp = HeaderValue::from_str(&csp_text).map_err(|_| ApiError::not_found())?;
    // The policy is part of what the page means: a site's new origins give
    // the page a new ETag, so a revalidation fetches them.
    let mut res = ASSETS.frame_html.respond(&req, REVALIDATE, Some(&csp_text));
    let h = res.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(res)
}

/// `/`: the demo page, only while the demo site is on.
pub async fn demo(req: HttpRequest, chat: web::Data<Chat>) -> Result<HttpResponse, ApiError> {
    if !chat.settings.demo_site {
        return Err(ApiError::not_found());
    }
    Ok(ASSETS.demo_html.respond(&req, REVALIDATE, None))
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

    fn check(accept: &[&str], expect: Encoding) {
        let got = negotiate(accept.iter().map(|s| s.as_bytes()));
        assert_eq!(got, expect, "Accept-Encoding: {accept:?}");
    }

    #[test]
    fn accept_encoding_picks_the_coding() {
        use Encoding::{Brotli, Gzip, Identity};
        check(&[], Identity);
        check(&[""], Identity);
        check(&["gzip"], Gzip);
        check(&["x-gzip"], Gzip);
        check(&["GZIP"], Gzip);
        check(&["gzip, deflate, br, zstd"], Brotli);
        check(&["gzip", "br"], Brotli);
        check(&["br;q=0.5, gzip"], Gzip);
        check(&["br;q=0, gzip;q=0"], Identity);
        check(&["deflate"], Identity);
        check(&["*"], Brotli);
        check(&["*;q=0.2, gzip;q=0.8"], Gzip);
        check(&["*;q=0, identity"], Identity);
        check(&["gzip;q=0.5, identity;q=1"], Identity);
        check(&["gzip;q=bogus"], Identity);
        check(&["gzip;q=1.5, br;q=0.001"], Brotli);
        check(&["gzip ; q=1.000"], Gzip);
    }

    #[test]
    fn qvalues() {
        for (v, q) in [
            ("0", Some(0)),
            ("1", Some(1000)),
            ("0.5", Some(500)),
            ("0.125", Some(125)),
            ("1.000", Some(1000)),
            ("1.001", None),
            ("0.1234", None),
            ("2", None),
            ("", None),
            ("0.x", None),
        ] {
            assert_eq!(parse_qvalue(v), q, "{v}");
        }
    }

    #[test]
    fn every_asset_has_smaller_compressed_forms_that_decode_to_it() {
        use std::io::Read;
        for (text, asset) in [
            (WIDGET_JS, &ASSETS.widget_js),
            (FRAME_JS, &ASSETS.frame_js),
            (FRAME_CSS, &ASSETS.frame_css),
        ] {
            let gz = asset.form(Encoding::Gzip);
            assert_eq!(gz.encoding, Encoding::Gzip);
            let mut back = String::new();
            flate2::read::GzDecoder::new(&gz.body[..])
                .read_to_string(&mut back)
                .unwrap();
            assert_eq!(back, text);
            let br = asset.form(Encoding::Brotli);
            assert_eq!(br.encoding, Encoding::Brotli);
            let mut back = String::new();
            brotli::Decompressor::new(&br.body[..], 4096)
                .read_to_string(&mut back)
                .unwrap();
            assert_eq!(back, text);
            assert!(br.body.len() < text.len() / 2, "brotli saves at least half");
            let tags: Vec<&str> = asset.forms.iter().map(|f| f.etag.as_str()).collect();
            assert_eq!(tags.len(), 3);
            assert!(tags.iter().all(|t| t.starts_with('"') && t.ends_with('"')));
            assert!(tags[0] != tags[1] && tags[1] != tags[2] && tags[0] != tags[2]);
        }
    }

    /// The keys of each language block of `frame/strings.js` (one key a
    /// line, `  xx: {` opening a block).
    fn string_tables() -> Vec<(String, Vec<String>)> {
        let src = include_str!("../../assets/frame/strings.js");
        let table = &src[src.find("const STRINGS = {").unwrap()..];
        let table = &table[..table.find("\n};").unwrap()];
        let mut langs: Vec<(String, Vec<String>)> = Vec::new();
        for line in table.lines().skip(1) {
            if let Some(lang) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(": {")) {
                langs.push((lang.to_owned(), Vec::new()));
            } else if let Some(entry) = line.strip_prefix("    ") {
                let key = entry.split(':').next().unwrap().trim_matches('\'');
                langs.last_mut().unwrap().1.push(key.to_owned());
            }
        }
        langs
    }

    #[test]
    fn every_language_has_every_string() {
        let langs = string_tables();
        let names: Vec<&str> = langs.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(names, ["en", "de", "fr", "es", "ja", "ar"]);
        let english = &langs[0].1;
        assert!(english.len() > 50, "{english:?}");
        for (lang, keys) in &langs {
            assert_eq!(keys, english, "{lang} has the keys of en, in its order");
        }
        // Every refusal the API can give has its words.
        for code in [
            "banned",
            "timed_out",
            "rate_limited",
            "slow_mode",
            "too_large",
            "blocked_text",
            "links_not_allowed",
            "read_only",
            "unavailable",
        ] {
            assert!(english.contains(&format!("err.{code}")), "{code}");
        }
    }

    #[test]
    fn the_frame_page_names_its_versioned_parts() {
        let html = std::str::from_utf8(&ASSETS.frame_html.forms[0].body).unwrap();
        let js = format!("/v1/frame.js?v={}", ASSETS.frame_js.version());
        let css = format!("/v1/frame.css?v={}", ASSETS.frame_css.version());
        assert!(html.contains(&js) && html.contains(&css), "{html}");
        assert!(!html.contains("{{"));
    }
}
