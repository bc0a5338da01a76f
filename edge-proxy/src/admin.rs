//! The operator's port (`--metrics-listen`): `/metrics`, `/healthz` and
//! `/readyz` (ready while at least one API node is healthy).

use std::sync::Arc;

use async_trait::async_trait;
use http::{header, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::metrics::{catch_up, metrics};
use crate::subscriber::BusState;
use crate::upstreams::{healthy_count, Upstreams};
use crate::versions::VersionMap;

/// What `/metrics` and `/readyz` look at.
pub struct Admin {
    map: Arc<VersionMap>,
    bus: Option<Arc<BusState>>,
    upstreams: Arc<Upstreams>,
}

impl Admin {
    /// `bus` is `None` when the edge runs without one.
    pub fn new(
        map: Arc<VersionMap>,
        bus: Option<Arc<BusState>>,
        upstreams: Arc<Upstreams>,
    ) -> Self {
        Self {
            map,
            bus,
            upstreams,
        }
    }

    /// Brings the gauges and mirrored counters up to date.
    pub fn refresh(&self) -> usize {
        let m = metrics();
        m.map_entries.set(self.map.len() as i64);
        catch_up(&m.map_evictions, self.map.evictions());
        catch_up(&m.map_resets, self.map.resets());
        let healthy = healthy_count(&self.upstreams);
        m.upstreams_healthy.set(healthy as i64);
        match &self.bus {
            Some(bus) => {
                m.bus_up.set(i64::from(bus.is_up()));
                let age = bus
                    .last_message()
                    .map(|t| self.map.now().0.saturating_sub(t.0) as f64 / 1000.0);
                // Never heard: report the time since start.
                m.bus_last_message_age
                    .set(age.unwrap_or(self.map.now().0 as f64 / 1000.0));
            }
            None => {
                m.bus_up.set(0);
                m.bus_last_message_age.set(0.0);
            }
        }
        healthy
    }

    fn bus_word(&self) -> &'static str {
        match &self.bus {
            None => "off",
            Some(b) if b.is_up() => "ok",
            Some(_) => "down",
        }
    }
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let len = body.len();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    if let Ok(v) = content_type.parse() {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(header::CONTENT_LENGTH, len.into());
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        const JSON: &str = "application/json";
        match session.req_header().uri.path() {
            "/metrics" => {
                self.refresh();
                let text = chatty_shared::telemetry::render_metrics();
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    text.into_bytes(),
                )
            }
            "/healthz" => reply(StatusCode::OK, JSON, br#"{"status":"ok"}"#.to_vec()),
            "/readyz" => {
                let healthy = self.refresh();
                let status = if healthy > 0 {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                let body = format!(
                    r#"{{"upstreams_healthy":{healthy},"bus":"{}","rooms":{}}}"#,
                    self.bus_word(),
                    self.map.len()
                );
                reply(status, JSON, body.into_bytes())
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                JSON,
                br#"{"error":{"code":"not_found","message":"no such path"}}"#.to_vec(),
            ),
        }
    }
}
