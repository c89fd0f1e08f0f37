//! Host controls on a signaling socket (`host_mute`, `host_remove`, `host_lock`): the role is
//! checked here, the room (host and target in the same one) by the media core.

use super::protocol::{ClientMessage, ErrorCode, ServerMessage};
use crate::auth::{Claims, Role};
use confab_sfu::{HostAction, ParticipantId, SfuHandle};

/// Whether `m` is a host control.
pub fn is_host_message(m: &ClientMessage) -> bool {
    matches!(
        m,
        ClientMessage::HostMute { .. }
            | ClientMessage::HostRemove { .. }
            | ClientMessage::HostLock { .. }
    )
}

/// Carries out host control `m` from `host` (joined, with `claims`): `None` when done, else the
/// error to answer (`not_allowed` for a token that is not a host's, `bad_json` for a malformed
/// participant id, or the media plane's refusal).
#[allow(clippy::result_large_err)] // the error is the reply itself, built once per command
pub async fn control(
    m: ClientMessage,
    claims: &Claims,
    sfu: &SfuHandle,
    host: ParticipantId,
) -> Option<ServerMessage> {
    if claims.role != Role::Host {
        return Some(ServerMessage::error(
            ErrorCode::NotAllowed,
            "only a host token may do this",
        ));
    }
    let target = |id: &str| {
        ParticipantId::parse(id).ok_or_else(|| {
            ServerMessage::error(ErrorCode::BadJson, "participant_id is not a participant id")
        })
    };
    let action = match m {
        ClientMessage::HostMute {
            participant_id,
            source,
        } => target(&participant_id).map(|participant| HostAction::Mute {
            participant,
            source: super::convert::source_in(source),
        }),
        ClientMessage::HostRemove { participant_id } => {
            target(&participant_id).map(|participant| HostAction::Remove { participant })
        }
        ClientMessage::HostLock { locked } => Ok(HostAction::Lock(locked)),
        _ => Err(ServerMessage::error(
            ErrorCode::Internal,
            "not a host control",
        )),
    };
    match action {
        Ok(action) => sfu
            .host(host, action)
            .await
            .err()
            .map(|e| ServerMessage::error(super::error_code(&e), e.to_string())),
        Err(refusal) => Some(refusal),
    }
}
