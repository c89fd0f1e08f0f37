//! Identifiers and small parsed domain types of the media plane.

use std::fmt;

/// A room name as the signaling layer accepted it: 1–64 characters of `[A-Za-z0-9_-]`.
///
/// Parse, don't validate: a `RoomId` that exists is well formed, so the media plane never
/// re-checks it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(String);

/// Why a string is not a [`RoomId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomIdError {
    /// Empty, or longer than [`RoomId::MAX_LEN`] bytes.
    #[error("a room id has 1 to 64 characters")]
    Length,
    /// A character outside `[A-Za-z0-9_-]`.
    #[error("a room id may only contain letters, digits, '-' and '_'")]
    Charset,
}

impl RoomId {
    /// Longest accepted room id, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Parses a room id. Errors: [`RoomIdError`].
    pub fn parse(s: &str) -> Result<Self, RoomIdError> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(RoomIdError::Length);
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(RoomIdError::Charset);
        }
        Ok(Self(s.to_owned()))
    }

    /// The room id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A participant of a room, unique for the life of the server process (a counter, never
/// reused). Rendered as `p<n>` on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub u64);

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

impl ParticipantId {
    /// Parses the wire form `p<n>`.
    pub fn parse(s: &str) -> Option<Self> {
        s.strip_prefix('p')?.parse().ok().map(Self)
    }
}

/// A published track: the publisher and the m-line (`a=mid`) of its publisher transport that
/// carries it. Rendered as `<participant>-<mid>` on the wire (e.g. `p3-1`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackId {
    /// Who publishes the track.
    pub participant: ParticipantId,
    /// The publisher transport's `a=mid` of the m-line carrying it.
    pub mid: String,
}

impl TrackId {
    /// Parses the wire form `<participant>-<mid>` (the participant part never holds a `-`).
    pub fn parse(s: &str) -> Option<Self> {
        let (p, mid) = s.split_once('-')?;
        if mid.is_empty() || mid.len() > 32 {
            return None;
        }
        Some(Self {
            participant: ParticipantId::parse(p)?,
            mid: mid.to_owned(),
        })
    }
}

impl fmt::Display for TrackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.participant, self.mid)
    }
}

/// An RTP synchronization source identifier (RFC 3550 section 3).
pub type Ssrc = u32;

/// Audio or video.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// An audio track (Opus).
    Audio,
    /// A video track (VP8, VP9, H.264).
    Video,
}

/// What a track captures; a participant publishes at most one track of each source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TrackSource {
    /// The microphone (audio).
    Microphone,
    /// The camera (video).
    Camera,
    /// A screen or window share (video).
    Screen,
}

impl TrackSource {
    /// The media kind this source produces.
    pub fn kind(self) -> MediaKind {
        match self {
            TrackSource::Microphone => MediaKind::Audio,
            TrackSource::Camera | TrackSource::Screen => MediaKind::Video,
        }
    }
}

/// Which of a participant's two peer connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportRole {
    /// The client offers, the server receives the client's tracks (and the chat DataChannel).
    Publisher,
    /// The server offers, the server sends the other participants' tracks.
    Subscriber,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_accept_the_documented_charset_only() {
        assert!(RoomId::parse("study-group_1").is_ok());
        assert_eq!(RoomId::parse(""), Err(RoomIdError::Length));
        assert_eq!(RoomId::parse(&"a".repeat(65)), Err(RoomIdError::Length));
        assert_eq!(RoomId::parse("a b"), Err(RoomIdError::Charset));
        assert_eq!(RoomId::parse("ä"), Err(RoomIdError::Charset));
    }

    #[test]
    fn participant_ids_round_trip_through_their_wire_form() {
        let id = ParticipantId(42);
        assert_eq!(id.to_string(), "p42");
        assert_eq!(ParticipantId::parse("p42"), Some(id));
        assert_eq!(ParticipantId::parse("42"), None);
    }
}
