//! The node's own life: draining before it stops, readiness, its heartbeat
//! on the bus, sweeping expired members, and following the bus into the
//! version caches (and out of the site caches, when a site changed).

use std::sync::atomic::Ordering;

use chatty_shared::{BusEvent, BusMessage};

use super::Chat;
use crate::metrics::{StoreOp, METRICS};

/// What `/readyz` reports: the node is ready when its store answers; the
/// bus is reported, never required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Readiness {
    pub store: bool,
    pub bus: bool,
}

impl Chat {
    /// The node is stopping: /readyz answers 503 from now on and every
    /// answer closes its connection, while requests are still served.
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Readiness: the store answers (the bus is reported, never required).
    pub(crate) async fn ready(&self) -> Readiness {
        let store_ok = self
            .store_call(StoreOp::Ping, self.store.ping())
            .await
            .is_ok();
        let bus_ok = tokio::time::timeout(self.settings.store_timeout, self.bus.ping())
            .await
            .is_ok_and(|r| r.is_ok());
        METRICS
            .backend_up
            .with_label_values(&["store"])
            .set(i64::from(store_ok));
        METRICS
            .backend_up
            .with_label_values(&["bus"])
            .set(i64::from(bus_ok));
        Readiness {
            store: store_ok,
            bus: bus_ok,
        }
    }

    /// Publishes this node's heartbeat.
    pub(crate) async fn publish_heartbeat(&self) {
        let ok = self
            .bus
            .publish(&BusMessage::Heartbeat {
                node: self.settings.node.clone(),
            })
            .await
            .is_ok();
        METRICS
            .backend_up
            .with_label_values(&["bus"])
            .set(i64::from(ok));
    }

    /// Expires members past their TTL and publishes the bumps.
    pub(crate) async fn sweep_presence(&self) {
        match self.presence.sweep(1000).await {
            Ok(changed) => {
                for (key, version) in changed {
                    self.members_moved(&key, "expire", version).await;
                }
            }
            Err(e) => tracing::debug!(error = %e, "presence sweep failed"),
        }
    }

    /// Applies what the bus says to the version caches, until the
    /// subscription ends.
    pub(crate) async fn follow_bus(&self) {
        let mut rx = self.bus.subscribe();
        while let Some(event) = rx.recv().await {
            match event {
                BusEvent::Up => {
                    self.caches.messages.set_live(true);
                    self.caches.members.set_live(true);
                }
                BusEvent::Down => {
                    self.caches.messages.set_live(false);
                    self.caches.members.set_live(false);
                    self.forget_sites();
                }
                BusEvent::Message(BusMessage::Room { key, version }) => {
                    self.caches.messages.update(key, version)
                }
                BusEvent::Message(BusMessage::Members { key, version }) => {
                    self.caches.members.update(key, version)
                }
                BusEvent::Message(BusMessage::Site { site }) => self.forget_site(&site),
                BusEvent::Message(BusMessage::Heartbeat { .. }) => {}
            }
        }
        self.caches.messages.set_live(false);
        self.caches.members.set_live(false);
    }
}
