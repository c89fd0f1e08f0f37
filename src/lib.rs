//! # confab
//!
//! A WebRTC SFU: browsers join rooms over WebSocket signaling and exchange audio and video
//! through the server, which terminates every peer connection and forwards RTP.
//!
//! ## Long-lived tasks and what each owns
//! - **HTTP server** (actix-web, 2 worker threads): serves `static/`, `/healthz`, REST
//!   (`/api/guest-token`, wallet sign-in `/api/auth/siwe`) and upgrades `/ws`. Owns nothing
//!   mutable but the sign-in nonces and per-IP limits ([`siwe`], [`http::auth`], short
//!   `std::sync::Mutex`es); handlers hold an [`http::AppState`] of cheap handles.
//! - **Signaling session** (one actix task per WebSocket, [`signaling::session`]): owns its
//!   socket, its rate limiter and, once joined, its participant's event queue. Parses client
//!   messages ([`signaling::protocol`]), calls the media plane, writes events back.
//! - **Media worker** (`confab_sfu`, its own thread and single-threaded runtime): owns the UDP
//!   media sockets, all rooms, all peer connections and the address → transport routing table.
//!   Reached only through `SfuHandle` commands (bounded queue, oneshot replies); it sends each
//!   participant's events on that participant's bounded queue and room lifecycle on a broadcast.
//! - **Webhooks** (`confab_webhooks`, with `--webhook-url` / `--langdao-events-url`): a writer
//!   task owns the room occupancy the signaling sessions report (through a non-blocking
//!   `Emitter`) and writes room and participant events to the outbox; the delivery worker leases
//!   outbox rows and posts them signed. Paid-session and settlement events are written by the
//!   settlement repository in the transaction of the state they report.
//!
//! ## Layers
//! `http → signaling → confab_sfu`. The media plane is a separate crate that depends on no HTTP,
//! JSON or database crate, so the direction is enforced by the compiler.
//!
//! Errors map to HTTP statuses in [`http::ApiError`] and to protocol error codes in
//! [`signaling::error_code`], each in one place.

pub mod app;
pub mod auth;
pub mod calls;
pub mod chat;
pub mod cluster;
pub mod config;
pub mod front;
pub mod http;
pub mod ice;
pub mod limits;
pub mod paid;
pub mod signaling;
pub mod siwe;
pub mod tls;

pub use app::Application;
