//! The JSON body extractor: reads at most [`MAX_BODY_BYTES`] (413 beyond;
//! a route may allow more with the second parameter),
//! refuses a content type other than JSON, and maps every parse failure to
//! an [`ApiError`] (`invalid_json` for syntax and bad UTF-8, `invalid_field`
//! for missing, unknown or mistyped fields).

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest};
use futures::StreamExt;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// A JSON request body of type `T`, of at most `MAX` bytes.
#[derive(Debug)]
pub struct JsonBody<T, const MAX: usize = MAX_BODY_BYTES>(pub T);

/// True for `application/json` and `application/*+json`, with any
/// parameters; a request without a content type is read as JSON too.
fn json_content_type(req: &HttpRequest) -> bool {
    let Some(v) = req.headers().get(header::CONTENT_TYPE) else {
        return true;
    };
    let Ok(v) = v.to_str() else { return false };
    let essence = v
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn too_large(max: usize) -> ApiError {
    ApiError::TooLarge(format!("request body must be at most {max} bytes"))
}

/// Parses a body already read; the mapping of serde errors to codes.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::InvalidField(e.to_string()),
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::InvalidJson(format!("malformed JSON: {e}"))
            }
        }
    })
}

impl<T: DeserializeOwned + 'static, const MAX: usize> FromRequest for JsonBody<T, MAX> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let content_type_ok = json_content_type(req);
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if !content_type_ok {
                return Err(ApiError::BadRequest(
                    "content type must be application/json".into(),
                ));
            }
            if declared.is_some_and(|n| n > MAX as u64) {
                return Err(too_large(MAX));
            }
            let mut buf = Vec::with_capacity(declared.map_or(256, |n| n as usize));
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| match e {
                    actix_web::error::PayloadError::Overflow => too_large(MAX),
                    _ => ApiError::BadRequest("could not read the request body".into()),
                })?;
                if buf.len() + chunk.len() > MAX {
                    return Err(too_large(MAX));
                }
                buf.extend_from_slice(&chunk);
            }
            parse(&buf).map(JsonBody)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatty_shared::wire::SendRequest;

    #[test]
    fn parse_errors_map_to_codes() {
        let ok: SendRequest = parse(br#"{"text":"hi","client_id":"a"}"#).unwrap();
        assert_eq!(ok.text, "hi");
        let cases: &[(&[u8], &str)] = &[
            (b"", "invalid_json"),
            (b"{", "invalid_json"),
            (b"nope", "invalid_json"),
            (
                b"{\"text\":\"\xff\xfe\",\"client_id\":\"a\"}",
                "invalid_json",
            ),
            (br#"{"text":1,"client_id":"a"}"#, "invalid_field"),
            (br#"{"client_id":"a"}"#, "invalid_field"),
            (br#"{"text":"a","client_id":"a","x":1}"#, "invalid_field"),
            (br#"[]"#, "invalid_field"),
        ];
        for (body, code) in cases {
            let err = parse::<SendRequest>(body).unwrap_err();
            assert_eq!(err.code(), *code, "{:?}", String::from_utf8_lossy(body));
        }
    }
}
