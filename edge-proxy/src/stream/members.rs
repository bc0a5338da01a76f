//! A stream's members: the room's list as `event: members`, when it moved
//! and at most once per [`MEMBERS_EVERY`], from a cache of lists framed
//! once and one fetch per room and members version.

use bytes::BytesMut;
use chatty_shared::{Resource, RoomVersion};
use tokio::time::Instant;

use super::{Cursor, Failed, StreamRoom, Streams, MEMBERS_EVERY};
use crate::flights::{follow, FlightKey, Seat};
use crate::versions::{Known, Refresh};

impl Streams {
    /// The members into `out` when they moved; when they cannot be read (a
    /// node without its presence store answers 503), the stream goes on
    /// with the messages and asks again once it may send a list again.
    pub(super) async fn members_if_moved(
        &self,
        room: &StreamRoom,
        cursor: &mut Cursor,
        out: &mut BytesMut,
    ) {
        if let Err(e) = self.read_members(room, cursor, out).await {
            tracing::debug!(error = %e, "a stream could not read its room's members");
        }
    }

    /// Reads the members into `out` when they moved (or were never sent),
    /// at most once per [`MEMBERS_EVERY`].
    async fn read_members(
        &self,
        room: &StreamRoom,
        cursor: &mut Cursor,
        out: &mut BytesMut,
    ) -> Result<(), Failed> {
        let key = room.key;
        if Instant::now() < cursor.members_next {
            return Ok(());
        }
        // Without the map's word, only a stream that has sent no list yet
        // asks a node itself. One that has keeps its list until the bus
        // tells of a change: members are the room's headcount, not its
        // log, and thousands of streams each asking every few seconds while
        // the nodes were slow (a room's word expires when its re-confirming
        // fails) kept them slow. The word of a move is what counts.
        let known =
            match self
                .map
                .answerable(key, Resource::Members, self.map.now(), Refresh::Leave)
            {
                Some(Known::Members(v)) if Some(v) == cursor.members => return Ok(()),
                Some(Known::Members(v)) => Some(v),
                _ if cursor.members.is_none() => None,
                _ => return Ok(()),
            };
        cursor.members_next = Instant::now() + MEMBERS_EVERY;
        let as_version = |v: u64| RoomVersion::new(0, v);
        let cached = |v: u64| self.members.get(key, 0, as_version(v));
        if let Some(framed) = known.and_then(cached) {
            cursor.members = known;
            out.extend_from_slice(&framed);
            return Ok(());
        }
        let flight = match self.member_flights.board(FlightKey {
            room: key,
            after: 0,
            version: known.map(as_version),
        }) {
            Seat::Lead(flight) => Some(flight),
            Seat::Follow(landed) => {
                if let Some((v, framed)) = follow(landed)
                    .await
                    .and_then(|v| Some((v.seq, cached(v.seq)?)))
                {
                    cursor.members = Some(v);
                    out.extend_from_slice(&framed);
                    return Ok(());
                }
                None
            }
        };
        let etag = cursor.members.map(chatty_shared::members_etag);
        let sent_at = self.map.now();
        let answer = self
            .fetcher
            .get(
                &format!("{}/members", room.base),
                etag.as_ref().map(|e| e.as_str()),
            )
            .await?;
        let version = match answer
            .etag
            .as_deref()
            .and_then(|e| self.map.observe_etag(key, Resource::Members, e, sent_at))
        {
            Some(Known::Members(v)) => Some(v),
            _ => None,
        };
        match answer.status {
            200 => {
                // Framed once, for every stream of the room.
                let mut framed = BytesMut::new();
                frame_members(&mut framed, &answer.body);
                let framed = framed.freeze();
                if let (Some(v), Some(flight)) = (version, &flight) {
                    self.members.put(key, 0, as_version(v), framed.clone());
                    flight.kept(as_version(v));
                }
                cursor.members = version;
                out.extend_from_slice(&framed);
                Ok(())
            }
            304 => Ok(()),
            _ => Err(Failed::Refused(answer)),
        }
    }
}

/// The members list, as a node answered it, on one `data:` line (a line
/// break can only be whitespace between JSON tokens: a string holds `\n`).
pub(super) fn frame_members(out: &mut BytesMut, body: &[u8]) {
    out.extend_from_slice(b"event: members\ndata: ");
    out.extend(body.iter().map(|b| if *b == b'\n' { b' ' } else { *b }));
    out.extend_from_slice(b"\n\n");
}
