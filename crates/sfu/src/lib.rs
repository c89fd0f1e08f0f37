//! # confab-sfu: the media plane
//!
//! Two layers, str0m's way:
//! - The **core** ([`Core`], `core/`) is sans-IO: it owns every room, every participant's two
//!   `rtc` peer connections (publisher: the client offers; subscriber: the server offers, so no
//!   glare), the routing table, path selection and consent, and forwarding. It takes inputs (a
//!   datagram with its 5-tuple, a typed command, a timeout, each with `now`) and yields
//!   [`Transmit`]s, the next deadline, and events on each participant's queue. Its run-loop
//!   contract is written at the top of `core/mod.rs`; `core/tests.rs` drives it in memory against
//!   real `rtc` peers with simulated time.
//! - The **media worker** ([`spawn_media_worker`], `worker.rs`) is the I/O shell: one tokio task
//!   on its own thread owning one core, its UDP sockets (one per announced interface, every peer
//!   on the same port) and its ICE-TCP listeners. It reads datagrams, commands and the clock,
//!   feeds the core and writes what it produces. Nothing is shared or locked; counters are
//!   relaxed atomics.
//! - **Several workers** (one per core by default, [`MediaConfig::workers`]) share nothing:
//!   each has its own core, ports (worker `i` on the configured port + `i`) and counters. A
//!   room lives on one worker ([`api::worker_for_room`], a stable hash of its id), so its
//!   packets never cross threads; a participant's id names its worker
//!   ([`api::worker_of_participant`]).
//!
//! The signaling layer talks to the workers through [`SfuHandle`] (a bounded command queue per
//! worker with oneshot replies) and receives per-participant [`SfuEvent`]s on a bounded queue it
//! hands over at join. Room lifecycle ([`RoomEvent`]) goes out on one broadcast for chat and
//! settlement.
//!
//! Routing and liveness are the core's, not `rtc`'s ([`routing`]): a 5-tuple is learnt only from
//! a binding request that names a transport's current (random) ufrag and verifies with its
//! password; media goes to the pair the browser nominated last (or where its data now arrives);
//! consent follows RFC 7675 (`disconnected` is shown, forwarding stops only when consent expires
//! after 30 s). A panic while handling one participant removes that participant only.
//!
//! This crate knows nothing of HTTP, JSON wire types or databases (it cannot: it does not
//! depend on them).
//!
//! Forwarding per packet ([`rewrite`]): SSRC, payload type, header-extension ids (by URI),
//! sequence number and timestamp are rewritten per subscriber leg; video waits for a keyframe
//! when a subscription starts (and asks the publisher for one, throttled to one per
//! `KEYFRAME_REQUEST_INTERVAL` per track); subscribers' PLI/FIR are relayed upstream;
//! NACKs are answered per leg from the `rtc` NACK responder's send buffer.

#![warn(missing_docs)]

pub mod api;
pub mod bwe;
pub mod codec;
pub mod core;
pub mod ids;
pub mod mailbox;
pub mod negotiation;
pub mod peer;
pub mod remote_offer;
pub mod retransmit;
pub mod rewrite;
pub(crate) mod room;
pub mod routing;
pub mod speakers;
mod uplink;
mod worker;

pub use crate::core::{Core, Transmit};
pub use crate::room::{LocalCandidates, DATA_CHANNEL_MAX_BUFFERED};
pub use crate::speakers::ActiveSpeaker;
pub use api::{
    Attachment, CloseReason, HostAction, JoinInfo, MediaConfig, MediaInterface, MediaWorker,
    ParticipantInfo, ParticipantSnapshot, PublishTrack, ResumeInfo, RoomEvent, RoomSnapshot,
    SfuError, SfuEvent, SfuHandle, SfuMetrics, SubscribedTrack, TrackInfo, TrackSettings,
    TransportSnapshot,
};
pub use ids::{MediaKind, ParticipantId, RoomId, RoomIdError, TrackId, TrackSource, TransportRole};
pub use mailbox::{mailbox, EventReceiver, EventSender};
pub use worker::{spawn_media_worker, ROOM_EVENTS};
