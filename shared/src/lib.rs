//! chatty-shared: everything the edge and the API nodes must agree on.
//!
//! Nothing in here knows of actix-web or pingora: both sides depend on this
//! crate and never on each other.
//!
//! The modules are private and what other crates use is re-exported here,
//! so the compiler reports what nobody uses; `wire` (the API's bodies) and
//! `telemetry` stay namespaces, as their names say what their items are.

mod bus;
mod config;
mod decimal;
mod etag;
mod freshness;
mod ratelimit;
mod room;
pub mod telemetry;
pub mod wire;

pub use bus::{
    redis_builder, run_redis_subscription, start_connecting, Bus, BusError, BusEvent, BusMessage,
    InProcessBus, RedisBus, RedisBusConfig, RedisTopology, HEARTBEAT_EVERY, MAX_NODE_LEN,
};
pub use config::{
    parse_duration, parse_rate, parse_rate_setting, Rate, RateSetting, EXIT_BAD_CONFIG,
};
pub use decimal::parse_decimal;
pub use etag::{if_none_match, members_etag, parse_etag, EtagBuf, RoomVersion, Tag};
pub use freshness::{BusTrust, Freshness, Version};
pub use ratelimit::{per_ms, retry_after_secs, Decision, WindowLimiter};
pub use room::{is_valid_room, is_valid_site, parse_room_path, Resource, RoomKey};
