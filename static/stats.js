// Receive statistics per remote participant, from a subscriber transport's getStats() report and
// the room model (no DOM). Used by the browser tests (`window.confab.stats()`) and the level meters.

/** @typedef {import('/types.js').Participant} Participant */
/** @typedef {import('/types.js').RemoteBinding} RemoteBinding */
/** @typedef {import('/types.js').ParticipantStats} ParticipantStats */

/**
 * Sums the `inbound-rtp` entries of `report` per remote participant: camera frames and packets,
 * screen frames, microphone packets and level. An entry is matched to its participant by the
 * m-line (`mid`), else by the received track's id.
 * @param {RTCStatsReport|null} report   the subscriber transport's stats (null: none yet)
 * @param {Map<string, Participant>} participants   the others, by id
 * @param {Map<string, RemoteBinding>} remote   subscriber m-lines, by mid
 * @returns {ParticipantStats[]}
 */
export function participantStats(report, participants, remote) {
  /** @type {Map<string, ParticipantStats>} */
  const out = new Map();
  for (const p of participants.values()) {
    out.set(p.id, {
      participantId: p.id, name: p.name, framesDecoded: 0, videoPacketsReceived: 0,
      screenFramesDecoded: 0, audioPacketsReceived: 0, audioLevel: 0,
    });
  }
  if (!report) return [...out.values()];
  /** @type {Map<string, RemoteBinding>} */
  const byTrackId = new Map();
  for (const b of remote.values()) if (b.track) byTrackId.set(b.track.id, b);
  report.forEach((s) => {
    if (s.type !== 'inbound-rtp') return;
    const b = (s.mid != null && remote.get(String(s.mid))) || byTrackId.get(s.trackIdentifier);
    const row = b && out.get(b.participantId);
    if (!b || !row) return;
    if (b.source === 'camera') {
      row.framesDecoded += s.framesDecoded || 0;
      row.videoPacketsReceived += s.packetsReceived || 0;
    } else if (b.source === 'screen') {
      row.screenFramesDecoded += s.framesDecoded || 0;
    } else if (b.source === 'microphone') {
      row.audioPacketsReceived += s.packetsReceived || 0;
      row.audioLevel = Math.max(row.audioLevel, s.audioLevel || 0);
    }
  });
  return [...out.values()];
}
