//! # confab-sfu: the media plane
//!
//! One **media worker** task ([`spawn_media_worker`]) owns everything that touches media:
//! the UDP sockets (one per announced interface, every peer on the same port), every room, every
//! participant's two `rtc` peer connections (publisher: the client offers; subscriber: the
//! server offers — so no glare), and the routing table from a remote address to its transport.
//! `rtc` is sans-IO: the worker reads a datagram, hands it to the right peer connection, drains
//! what that produced, forwards RTP to the subscribers' peer connections and writes their output
//! to the socket. Nothing in here is shared or locked; counters are relaxed atomics.
//!
//! The signaling layer talks to the worker through [`SfuHandle`] (a bounded command queue with
//! oneshot replies) and receives per-participant [`SfuEvent`]s on a bounded queue it hands over
//! at join. Room lifecycle ([`RoomEvent`]) goes out on a broadcast for chat and settlement.
//!
//! Routing and liveness are the worker's, not `rtc`'s ([`routing`]): a 5-tuple is learnt only
//! from an authenticated binding request; media goes to the pair the browser nominated last (or
//! where its data now arrives); consent follows RFC 7675 (`disconnected` is shown, forwarding
//! stops only when consent expires after 30 s).
//!
//! This crate knows nothing of HTTP, JSON wire types or databases (it cannot: it does not
//! depend on them).
//!
//! Forwarding per packet ([`rewrite`]): SSRC, payload type, header-extension ids (by URI),
//! sequence number and timestamp are rewritten per subscriber leg; video waits for a keyframe
//! when a subscription starts (and asks the publisher for one, throttled to one per
//! [`room::KEYFRAME_REQUEST_INTERVAL`] per track); subscribers' PLI/FIR are relayed upstream;
//! NACKs are answered per leg from the `rtc` NACK responder's send buffer.

#![warn(missing_docs)]

pub mod api;
pub mod codec;
pub mod core;
pub mod ids;
pub mod negotiation;
pub mod peer;
pub mod rewrite;
pub(crate) mod room;
pub mod routing;
mod worker;

pub use crate::core::{Core, Transmit};
pub use api::{
    CloseReason, JoinInfo, MediaConfig, MediaInterface, ParticipantInfo, PublishTrack, RoomEvent,
    SfuError, SfuEvent, SfuHandle, SfuMetrics, SubscribedTrack, TrackInfo, EVENT_QUEUE,
};
pub use ids::{MediaKind, ParticipantId, RoomId, RoomIdError, TrackId, TrackSource, TransportRole};
pub use worker::{spawn_media_worker, ROOM_EVENTS};
