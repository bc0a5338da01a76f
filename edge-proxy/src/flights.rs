//! One upstream fetch per room, version and page: when polls the edge
//! cannot answer from memory ask for the same `(room, after)` while the room
//! is at the same version (or unknown), the first goes to an API node and
//! the others wait for its answer, then look at the version map and the
//! page cache again. A plain type (no pingora).
//!
//! The fetch that leads holds a [`Flight`]; dropping it (once its page is
//! kept, or when it failed or kept nothing) lands it and lets every follower
//! go, told the version of the page kept, if one was ([`Flight::kept`]). A follower waits at most a bounded time, and once: if the map or the
//! page cache still cannot answer it, it is forwarded like any poll. Entries
//! live only while their fetch is in flight, so they are bounded by the
//! requests in flight.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chatty_shared::RoomVersion;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::versions::{RoomHash, SHARDS};

/// Longest time a follower waits for the fetch it follows.
pub const FOLLOW_LIMIT: Duration = Duration::from_secs(5);

/// What one fetch is for: a room's page after `after`, while the room is at
/// `version` (`None`: the edge does not know the room's version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlightKey {
    pub room: RoomHash,
    pub after: u64,
    pub version: Option<RoomVersion>,
}

type FlightMap = HashMap<FlightKey, watch::Receiver<Option<RoomVersion>>>;

/// The fetches in flight. See the module docs.
#[derive(Debug)]
pub struct Flights {
    shards: Box<[Mutex<FlightMap>]>,
}

/// A fetch in flight, held by the request that makes it.
#[derive(Debug)]
pub struct Flight {
    flights: Arc<Flights>,
    key: FlightKey,
    landed: watch::Sender<Option<RoomVersion>>,
}

/// A request's seat on a flight.
#[derive(Debug)]
pub enum Seat {
    /// Nobody is fetching it: this request does.
    Lead(Flight),
    /// Another request is: wait for it with [`follow`].
    Follow(watch::Receiver<Option<RoomVersion>>),
}

impl Default for Flights {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl Flights {
    fn shard(&self, key: &FlightKey) -> &Mutex<FlightMap> {
        &self.shards[(key.room.0 >> 40) as usize % SHARDS]
    }

    /// Leads the fetch for `key`, or follows the one in flight.
    pub fn board(self: &Arc<Self>, key: FlightKey) -> Seat {
        let mut shard = self.shard(&key).lock();
        if let Some(landed) = shard.get(&key) {
            return Seat::Follow(landed.clone());
        }
        let (tx, rx) = watch::channel(None);
        shard.insert(key, rx);
        Seat::Lead(Flight {
            flights: self.clone(),
            key,
            landed: tx,
        })
    }

    /// Fetches in flight.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

impl Flight {
    /// Tells the followers that the page is kept at `version`.
    pub fn kept(&self, version: RoomVersion) {
        self.landed.send_replace(Some(version));
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        // The sender goes right after this: every follower wakes.
        self.flights.shard(&self.key).lock().remove(&self.key);
    }
}

/// Waits until the followed fetch lands, at most [`FOLLOW_LIMIT`]: the
/// version of the page it kept, if it kept one.
pub async fn follow(mut landed: watch::Receiver<Option<RoomVersion>>) -> Option<RoomVersion> {
    // `wait_for` ends with an error once the leader's sender is gone, which
    // is the only way a flight lands.
    let _ = tokio::time::timeout(FOLLOW_LIMIT, landed.wait_for(|_| false)).await;
    *landed.borrow()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(after: u64, seq: Option<u64>) -> FlightKey {
        FlightKey {
            room: RoomHash(0xabcd_0000_1234),
            after,
            version: seq.map(|s| RoomVersion::new(1, s)),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_leads_the_others_follow_until_it_lands() {
        let flights = Arc::new(Flights::default());
        let Seat::Lead(lead) = flights.board(key(3, Some(4))) else {
            panic!("the first leads")
        };
        let mut followers = Vec::new();
        for _ in 0..3 {
            let Seat::Follow(rx) = flights.board(key(3, Some(4))) else {
                panic!("the others follow")
            };
            followers.push(tokio::spawn(async move {
                let start = tokio::time::Instant::now();
                assert_eq!(follow(rx).await, Some(RoomVersion::new(1, 4)));
                start.elapsed()
            }));
        }
        // Another page, version or an unknown room is another flight.
        for other in [key(2, Some(4)), key(3, Some(5)), key(3, None)] {
            assert!(matches!(flights.board(other), Seat::Lead(_)), "{other:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        lead.kept(RoomVersion::new(1, 4));
        drop(lead);
        for f in followers {
            assert_eq!(f.await.unwrap(), Duration::from_millis(200));
        }
        assert_eq!(flights.len(), 0);
        // Landed: the next request leads again.
        assert!(matches!(flights.board(key(3, Some(4))), Seat::Lead(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_waits_a_bounded_time_and_a_landed_flight_not_at_all() {
        let flights = Arc::new(Flights::default());
        let Seat::Lead(lead) = flights.board(key(0, None)) else {
            panic!("leads")
        };
        let Seat::Follow(rx) = flights.board(key(0, None)) else {
            panic!("follows")
        };
        let start = tokio::time::Instant::now();
        assert_eq!(follow(rx.clone()).await, None);
        assert_eq!(start.elapsed(), FOLLOW_LIMIT);
        drop(lead);
        let start = tokio::time::Instant::now();
        assert_eq!(follow(rx).await, None, "landed with nothing kept");
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
