//! Paid-session REST: another backend declares sessions and posts LangDAO's WebRTC events;
//! clients read their room's paid session and its settlement.

use super::{authorize_room, bearer, ApiError, AppState};
use crate::paid::{parse_address, PaidError, PaidHandle, PaidInfo, Presence, Who};
use actix_web::{web, HttpRequest, HttpResponse};
use confab_settlement::Party;
use secrecy::ExposeSecret;
use serde::Deserialize;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/sessions", web::post().to(create_session))
        .route("/api/webrtc-events", web::post().to(webrtc_event))
        .route(
            "/api/rooms/{room}/paid-session",
            web::get().to(room_paid_session),
        );
}

fn paid(state: &AppState) -> Result<&PaidHandle, ApiError> {
    state.paid.as_ref().ok_or(ApiError::Conflict {
        code: "paid_sessions_disabled",
        message: "paid sessions need CHAIN_RPC_URL, CONFAB_CONTRACT_ADDRESS and a wallet key"
            .into(),
    })
}

/// Checks the shared secret of another backend (constant-time comparison).
fn backend_auth(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let given = bearer(req)
        .or_else(|| {
            req.headers()
                .get("x-webhook-secret")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let Some(secret) = state.api_secret.as_ref() else {
        return Err(ApiError::Unauthorized(crate::auth::AuthError::Invalid(
            "no API secret is configured".into(),
        )));
    };
    let expected = secret.expose_secret().as_bytes();
    let ok = given.len() == expected.len()
        && given
            .as_bytes()
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if ok {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(crate::auth::AuthError::Invalid(
            "bad API secret".into(),
        )))
    }
}

/// The one mapping of paid-session errors to HTTP.
pub(crate) fn api_error(e: PaidError) -> ApiError {
    match e {
        PaidError::NotOnChain => ApiError::Conflict {
            code: "paid_session_not_found",
            message: e.to_string(),
        },
        PaidError::TutorBusy => ApiError::Conflict {
            code: "tutor_busy",
            message: e.to_string(),
        },
        PaidError::RoomBusy => ApiError::Conflict {
            code: "paid_session_running",
            message: e.to_string(),
        },
        PaidError::BadAddress(_) => ApiError::BadRequest(e.to_string()),
        PaidError::ChainUnavailable(_) | PaidError::Unavailable(_) | PaidError::Stopped => {
            ApiError::Unavailable(e.client_message())
        }
    }
}

/// The JSON form of a running paid session.
pub(crate) fn info_json(i: &PaidInfo) -> serde_json::Value {
    serde_json::json!({
        "id": i.id.to_string(),
        "room": i.room,
        "student": i.student.to_checksum(None),
        "tutor": i.tutor.to_checksum(None),
        "language": i.language,
        "chain_session_id": i.chain_session_id.to_string(),
        "rate_per_second": i.rate_per_second.to_string(),
        "started_at": i.started_at,
    })
}

#[derive(Deserialize)]
struct CreateSession {
    room: String,
    student: String,
    tutor: String,
    language: u8,
}

/// `POST /api/sessions` (backend secret): `{room, student, tutor, language}` → 201 with the
/// session; 409 `paid_session_not_found` when the chain shows no such active session, 409
/// `paid_session_running` when the room already runs another one.
async fn create_session(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<CreateSession>,
) -> Result<HttpResponse, ApiError> {
    backend_auth(&req, &state)?;
    let paid = paid(&state)?;
    let room =
        confab_sfu::RoomId::parse(&body.room).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let student = parse_address(&body.student).map_err(api_error)?;
    let tutor = parse_address(&body.tutor).map_err(api_error)?;
    let info = paid
        .start(&room, student, tutor, body.language)
        .await
        .map_err(api_error)?;
    Ok(HttpResponse::Created().json(info_json(&info)))
}

/// LangDAO's WebRTC event, as their backend posts it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebrtcEvent {
    #[serde(rename = "type")]
    kind: String,
    /// The room (LangDAO calls it the session id).
    #[serde(alias = "roomId", alias = "room")]
    session_id: String,
    #[serde(default)]
    user_address: Option<String>,
    #[serde(default)]
    user_role: Option<String>,
    #[serde(default)]
    ended_by: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    reason: Option<String>,
}

/// `POST /api/webrtc-events` (backend secret): `session-heartbeat`, `session-ended` (`endedBy`,
/// `userAddress`), `user-disconnected` (`userRole`, `reason`), with the meaning LangDAO's backend
/// gives them, and our `user-left` (a party left on purpose: once both have, the session ends at
/// once). 404 `not_found` for a room without a running paid session.
async fn webrtc_event(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    backend_auth(&req, &state)?;
    let paid = paid(&state)?;
    let ev: WebrtcEvent = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("malformed event: {e}")))?;
    let role = |r: Option<&str>| match r.map(str::to_ascii_lowercase).as_deref() {
        Some("student") => Some(Party::Student),
        Some("tutor") => Some(Party::Tutor),
        _ => None,
    };
    let who = match (
        ev.user_address.as_deref(),
        role(ev.user_role.as_deref()).or(role(ev.ended_by.as_deref())),
    ) {
        (_, Some(p)) => Who::Party(p),
        (Some(a), None) => Who::User(a.to_owned()),
        (None, None) => Who::Party(Party::Student),
    };
    let what = match ev.kind.as_str() {
        "session-heartbeat" => Presence::Heartbeat,
        "session-ended" => Presence::EndPressed,
        "user-disconnected" => Presence::Left,
        "user-left" => Presence::LeftOnPurpose,
        "user-connected" | "user-joined" => Presence::Joined,
        other => {
            return Err(ApiError::BadRequest(format!(
                "unknown event type {other:?}"
            )))
        }
    };
    if !paid.presence_of(&ev.session_id, who, what).await {
        return Err(ApiError::NotFound(format!(
            "no running paid session in room {:?}",
            ev.session_id
        )));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({"ok": true})))
}

#[derive(Deserialize)]
struct TokenQuery {
    #[serde(default)]
    token: Option<String>,
}

/// `GET /api/rooms/{room}/paid-session` (room token): the contract (`contract`, EIP-55) and its
/// chain (`chain_id`, null until the node has answered), and the running paid session, or the
/// latest one with its settlement (`state`: pending, submitted, settled, ended_elsewhere, failed).
/// A room without one (or a server without chain settings, `enabled: false`) answers 200 with
/// `session: null`, so every room page can ask once without an error.
async fn room_paid_session(
    req: HttpRequest,
    state: web::Data<AppState>,
    room: web::Path<String>,
    query: web::Query<TokenQuery>,
) -> Result<HttpResponse, ApiError> {
    let room = authorize_room(&req, &state, query.token.as_deref(), &room)?;
    let room = room.as_str();
    let Some(paid) = state.paid.as_ref() else {
        return Ok(HttpResponse::Ok()
            .json(serde_json::json!({"enabled": false, "running": false, "session": null})));
    };
    // Where the page sends `startSession`: the wallet must be on this chain.
    let (contract, chain_id) = match &state.paid_chain {
        Some(c) => (Some(c.contract.to_checksum(None)), c.chain_id()),
        None => (None, None),
    };
    if let Some(i) = paid.current(room).await {
        return Ok(HttpResponse::Ok().json(serde_json::json!({
            "enabled": true, "contract": contract, "chain_id": chain_id,
            "running": true, "session": info_json(&i),
        })));
    }
    match paid.latest(room).await.map_err(api_error)? {
        None => Ok(HttpResponse::Ok().json(serde_json::json!({
            "enabled": true, "contract": contract, "chain_id": chain_id,
            "running": false, "session": null,
        }))),
        Some((p, s)) => Ok(HttpResponse::Ok().json(serde_json::json!({
            "enabled": true,
            "contract": contract,
            "chain_id": chain_id,
            "running": p.ended_at.is_none(),
            "session": {
                "id": p.id.to_string(),
                "room": p.room_id,
                "student": p.student_address,
                "tutor": p.tutor_address,
                "language": p.language_id,
                "chain_session_id": p.chain_session_id,
                "started_at": p.started_at.timestamp(),
                "ended_at": p.ended_at.map(|t| t.timestamp()),
                "end_reason": p.end_reason,
            },
            "settlement": s.map(|s| serde_json::json!({
                "state": s.state,
                "attempts": s.attempts,
                "last_error": s.last_error,
                "tx_hash": s.tx_hash,
                "gas_used": s.gas_used,
                "duration_s": s.duration_s,
                "total_paid": s.total_paid,
            })),
        }))),
    }
}
