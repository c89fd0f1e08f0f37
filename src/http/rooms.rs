//! The room directory and the admin views (issue 11; docs/protocol.md, "Room directory and admin
//! views"):
//!
//! - `POST /api/rooms/{room}/listing` (a `host` token, bound to that room or to none)
//!   `{"listed": bool, "title": "…"}`: list the room in the directory (or take it out).
//! - `GET /api/rooms/public` (any valid token): the listed rooms that are open now, with their
//!   participant count.
//! - `GET /api/rooms` and `GET /api/rooms/{room}` (an `admin` token): every open room; one room
//!   with its participants, tracks, mute states, transport states and selected candidate pairs.
//!   No token, ICE credential or resume token is ever in them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{bearer, ApiError, AppState};
use crate::auth::{Claims, Role};

/// Longest directory title, characters.
pub const MAX_TITLE: usize = 100;

/// Most rooms listed at once (a host cannot grow the directory without bound).
pub const MAX_LISTED: usize = 1000;

/// Listed rooms: room id → title. Entries of rooms that closed are dropped when the directory
/// is read.
#[derive(Debug, Clone, Default)]
pub struct Directory(Arc<Mutex<HashMap<String, String>>>);

impl Directory {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/rooms/public", web::get().to(public_rooms))
        .route("/api/rooms", web::get().to(admin_rooms))
        .route("/api/rooms/{room}", web::get().to(admin_room))
        .route("/api/rooms/{room}/listing", web::post().to(set_listing));
}

fn claims(req: &HttpRequest, state: &AppState) -> Result<Claims, ApiError> {
    Ok(state.tokens.verify(&bearer(req).unwrap_or_default())?)
}

fn admin(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    if claims(req, state)?.role != Role::Admin {
        return Err(ApiError::Forbidden("an admin token is needed".into()));
    }
    Ok(())
}

fn unavailable(e: confab_sfu::SfuError) -> ApiError {
    ApiError::Unavailable(e.to_string())
}

/// `GET /api/rooms` (admin): `{"rooms": [{"id", "participants"}]}`, by id.
async fn admin_rooms(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    admin(&req, &state)?;
    let rooms = state.sfu.snapshot(None).await.map_err(unavailable)?;
    let rooms: Vec<_> = rooms
        .iter()
        .map(|r| json!({"id": r.id.as_str(), "participants": r.participants.len()}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "rooms": rooms })))
}

/// `GET /api/rooms/{room}` (admin): the room in detail, or 404.
async fn admin_room(
    req: HttpRequest,
    state: web::Data<AppState>,
    room: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    admin(&req, &state)?;
    let id = confab_sfu::RoomId::parse(&room).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let rooms = state.sfu.snapshot(Some(id)).await.map_err(unavailable)?;
    let Some(r) = rooms.first() else {
        return Err(ApiError::NotFound("no such room is open".into()));
    };
    let transport = |t: &confab_sfu::TransportSnapshot| {
        json!({
            "state": t.state,
            "consent": t.consent,
            "selected_pair": t.selected.as_ref().map(|(proto, local, remote)| json!({
                "protocol": proto, "local": local.to_string(), "remote": remote.to_string(),
            })),
        })
    };
    let participants: Vec<_> = r
        .participants
        .iter()
        .map(|p| {
            json!({
                "id": p.id.to_string(),
                "name": p.name,
                "user_id": p.user,
                "reconnecting": p.detached,
                "tracks": p.tracks.iter().map(|t| json!({
                    "id": t.id.to_string(),
                    "kind": match t.kind {
                        confab_sfu::MediaKind::Audio => "audio",
                        confab_sfu::MediaKind::Video => "video",
                    },
                    "source": match t.source {
                        confab_sfu::TrackSource::Microphone => "microphone",
                        confab_sfu::TrackSource::Camera => "camera",
                        confab_sfu::TrackSource::Screen => "screen",
                    },
                    "muted": t.muted,
                })).collect::<Vec<_>>(),
                "publisher": transport(&p.publisher),
                "subscriber": p.subscriber.as_ref().map(transport),
            })
        })
        .collect();
    let title = state.directory.lock().get(r.id.as_str()).cloned();
    Ok(HttpResponse::Ok().json(json!({
        "id": r.id.as_str(),
        "listed": title.is_some(),
        "title": title,
        "participants": participants,
    })))
}

#[derive(Deserialize)]
struct Listing {
    listed: bool,
    #[serde(default)]
    title: String,
}

/// `POST /api/rooms/{room}/listing` (host) `{"listed", "title"}` → `{"listed", "title"}`.
/// Errors: 401, 403 (not a host, or a host of another room), 400 (title empty or over
/// [`MAX_TITLE`] characters when listing; bad room id), 409 `directory_full`.
async fn set_listing(
    req: HttpRequest,
    state: web::Data<AppState>,
    room: web::Path<String>,
    body: web::Json<Listing>,
) -> Result<HttpResponse, ApiError> {
    let c = claims(&req, &state)?;
    let id = confab_sfu::RoomId::parse(&room).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if c.role != Role::Host || c.room.as_deref().is_some_and(|r| r != id.as_str()) {
        return Err(ApiError::Forbidden(
            "a host token for this room is needed".into(),
        ));
    }
    let mut dir = state.directory.lock();
    if !body.listed {
        dir.remove(id.as_str());
        return Ok(HttpResponse::Ok().json(json!({"listed": false, "title": null})));
    }
    let title = body.title.trim();
    if title.is_empty() || title.chars().count() > MAX_TITLE || title.chars().any(char::is_control)
    {
        return Err(ApiError::BadRequest(format!(
            "a title has 1 to {MAX_TITLE} printable characters"
        )));
    }
    if dir.len() >= MAX_LISTED && !dir.contains_key(id.as_str()) {
        return Err(ApiError::Conflict {
            code: "directory_full",
            message: "the directory is full".into(),
        });
    }
    dir.insert(id.as_str().to_owned(), title.to_owned());
    Ok(HttpResponse::Ok().json(json!({"listed": true, "title": title})))
}

/// `GET /api/rooms/public` (any token): `{"rooms": [{"id", "title", "participants"}]}`, the
/// listed rooms open now, by title. A listed room that has closed is dropped from the directory.
async fn public_rooms(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    claims(&req, &state)?;
    let open = state.sfu.snapshot(None).await.map_err(unavailable)?;
    let counts: HashMap<&str, usize> = open
        .iter()
        .map(|r| (r.id.as_str(), r.participants.len()))
        .collect();
    let mut dir = state.directory.lock();
    dir.retain(|id, _| counts.contains_key(id.as_str()));
    let mut rooms: Vec<_> = dir
        .iter()
        .map(|(id, title)| {
            (
                title.clone(),
                id.clone(),
                counts.get(id.as_str()).copied().unwrap_or(0),
            )
        })
        .collect();
    drop(dir);
    rooms.sort();
    let rooms: Vec<_> = rooms
        .into_iter()
        .map(|(title, id, n)| json!({"id": id, "title": title, "participants": n}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "rooms": rooms })))
}
