//! Presence, 1:1 call and matching messages on a signaling socket: allowed with or without a
//! room, answered by the presence and call task (`crate::calls`).

use super::protocol::{ClientMessage, ErrorCode, ServerMessage};
use crate::calls::{CallAction, CallService};

/// Whether `m` is a presence, call or matching message.
pub fn is_lobby_message(m: &ClientMessage) -> bool {
    matches!(
        m,
        ClientMessage::WatchPresence
            | ClientMessage::CallInvite { .. }
            | ClientMessage::CallAccept { .. }
            | ClientMessage::CallReject { .. }
            | ClientMessage::CallCancel { .. }
            | ClientMessage::CallHangup { .. }
            | ClientMessage::MatchStart
            | ClientMessage::MatchStop
    )
}

/// The answer to a message of [`is_lobby_message`] from `socket` of `user`.
pub async fn answer(
    m: ClientMessage,
    calls: &CallService,
    user: &str,
    socket: u64,
) -> ServerMessage {
    let act =
        |call_id: String, action| async move { calls.act(user, socket, &call_id, action).await };
    match m {
        ClientMessage::WatchPresence => calls.watch(user, socket).await,
        ClientMessage::CallInvite { callee } => calls.invite(user, socket, &callee).await,
        ClientMessage::CallAccept { call_id } => act(call_id, CallAction::Accept).await,
        ClientMessage::CallReject { call_id } => act(call_id, CallAction::Reject).await,
        ClientMessage::CallCancel { call_id } => act(call_id, CallAction::Cancel).await,
        ClientMessage::CallHangup { call_id } => act(call_id, CallAction::Hangup).await,
        ClientMessage::MatchStart => calls.matching(user, socket, true).await,
        ClientMessage::MatchStop => calls.matching(user, socket, false).await,
        _ => ServerMessage::error(ErrorCode::Internal, "not a presence or call message"),
    }
}
