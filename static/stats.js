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
      participantId: p.id, name: p.name, framesDecoded: 0, frameWidth: 0, videoPacketsReceived: 0,
      videoPacketsLost: 0, freezeCount: 0, totalFreezesDuration: 0,
      screenFramesDecoded: 0, audioPacketsReceived: 0, audioPacketsLost: 0, audioLevel: 0, audioStatsAt: 0,
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
      row.frameWidth = Math.max(row.frameWidth, s.frameWidth || 0);
      row.videoPacketsReceived += s.packetsReceived || 0;
      row.videoPacketsLost += s.packetsLost || 0;
      row.freezeCount += s.freezeCount || 0;
      row.totalFreezesDuration += s.totalFreezesDuration || 0;
    } else if (b.source === 'screen') {
      row.screenFramesDecoded += s.framesDecoded || 0;
    } else if (b.source === 'microphone') {
      row.audioPacketsReceived += s.packetsReceived || 0;
      row.audioPacketsLost += s.packetsLost || 0;
      row.audioStatsAt = s.timestamp || 0; // when the browser read these counters (ms, epoch)
      row.audioLevel = Math.max(row.audioLevel, s.audioLevel || 0);
    }
  });
  return [...out.values()];
}

/**
 * What a publisher transport has sent, summed per kind from its `outbound-rtp` entries (retransmissions
 * excluded: `packetsSent` counts each media packet once, RTX rides `retransmittedPacketsSent`).
 * @param {RTCStatsReport|null} report   the publisher transport's stats (null: none yet)
 * @returns {import('/types.js').SendStats}
 */
export function sendStats(report) {
  const out = { videoPacketsSent: 0, videoBytesSent: 0, framesSent: 0, audioPacketsSent: 0, frameSize: '', qualityLimitation: 'none' };
  if (!report) return out;
  report.forEach((s) => {
    if (s.type !== 'outbound-rtp') return;
    if (s.kind === 'video') {
      out.videoPacketsSent += s.packetsSent || 0;
      out.videoBytesSent += s.bytesSent || 0;
      out.framesSent += s.framesSent || 0;
      if (s.frameWidth) out.frameSize = `${s.frameWidth}x${s.frameHeight}`;
      if (s.qualityLimitationReason) out.qualityLimitation = s.qualityLimitationReason;
    } else if (s.kind === 'audio') {
      out.audioPacketsSent += s.packetsSent || 0;
    }
  });
  return out;
}

/**
 * The ICE candidate pairs of one transport: the selected one (as `transport.selectedCandidatePairId`
 * names it) and how many pairs succeeded or were nominated, for diagnostics of pair switches.
 * @param {RTCStatsReport|null} report
 * @returns {import('/types.js').PairStats|null}
 */
export function pairStats(report) {
  if (!report) return null;
  /** @type {Map<string, any>} */
  const byId = new Map();
  report.forEach((s) => byId.set(s.id, s));
  let selectedId = null;
  let succeeded = 0;
  let nominated = 0;
  report.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) selectedId = s.selectedCandidatePairId;
    if (s.type === 'candidate-pair') {
      if (s.state === 'succeeded') succeeded += 1;
      if (s.nominated) nominated += 1;
    }
  });
  const pair = selectedId ? byId.get(selectedId) : null;
  const addr = (/** @type {any} */ c) => (c ? `${c.protocol} ${c.address ?? c.ip}:${c.port} ${c.candidateType}` : null);
  return {
    local: pair ? addr(byId.get(pair.localCandidateId)) : null,
    remote: pair ? addr(byId.get(pair.remoteCandidateId)) : null,
    succeeded,
    nominated,
    changes: [...byId.values()].find((s) => s.type === 'transport')?.selectedCandidatePairChanges ?? 0,
  };
}
