//! # confab-client
//!
//! A programmatic confab participant built on webrtc-rs (the async `webrtc` crate): it speaks
//! the signaling protocol over WebSocket, runs the two transports like the browser client
//! (publisher: it offers; subscriber: it answers the server), publishes synthetic RTP and
//! measures what it receives (loss, order, integrity, latency). The integration tests and the
//! load generator both use it.
//!
//! Synthetic payload layout (after a codec prefix: 2 bytes for VP8, none for Opus):
//! `counter: u32 BE | sent_at_us: u64 BE (Unix epoch, µs) | filler` where filler byte `i` is
//! `(counter + i) as u8`, so corruption is detectable.

#![warn(missing_docs)]

mod media;
mod session;

pub use media::{
    payload, RemoteTrackStats, SyntheticTrack, TrackStats, LAYER_SHIFT, SIMULCAST_RIDS,
    SIMULCAST_SHARES,
};
pub use session::{Client, ClientError, ClientEvent, ClientOptions};
