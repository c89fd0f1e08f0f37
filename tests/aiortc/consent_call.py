"""A call between two aiortc peers through the real confab server, for a minute.

aiortc is an independent WebRTC stack (Python: aioice, pylibsrtp, libvpx and libopus through
PyAV) whose ICE agent checks consent at RFC 7675's pace: every 5 s +- 20 %. Chromium checks every
2.5 s, so a server that reads a transport as disconnected 5 s after the last check looks perfect
with browsers and freezes aiortc (issue 8: video frozen 15-17 s in every 30 s). This client is
written from docs/protocol.md alone (guest token, WebSocket, join, publisher transport offered by
the client, subscriber transport offered by the server), so it also tests that document.

Two peers publish a 320x240 VP8 camera at 20 fps and an Opus microphone, and receive each other.
Over the last 60 s of the call every received video must deliver >= 90 % of the frames the other
side encoded with no gap over 1 s, >= 90 % of its audio frames, and the server must count no
transport disconnect, failure or path switch.

Then a resume (docs/protocol.md, "Resume"): 3 s into a 10 s window, ada's WebSocket is dropped
abruptly (the TCP connection aborted: no close frame, no `leave`). ada opens a new socket with the
access token it joined with and sends `resume` with the `participant_id` and `resume_token` of its
`joined`. It waits to send it until bob was told `participant_reconnecting`: a `resume` that overtakes the
server's notice of the lost socket is a documented takeover in which the others are told nothing,
so waiting makes the notice observable every time (on loopback the wait is a few milliseconds,
and the new socket is opened meanwhile). Asserted: ada gets `resumed` (same id and token); bob gets
`participant_reconnecting` then `participant_reconnected` for ada and never `participant_left`;
over the 10 s window each direction delivers >= 95 % of the video and audio frames sent, with no
gap over 2 s; the transport counters stay at 0 (a resume does not touch media). Then ada sends
`leave` and bob must get `participant_left` for ada within 2 s.

Usage: python consent_call.py <server base URL, e.g. http://127.0.0.1:8080> [seconds=60]
Exit status 0 when every assertion holds; the figures are printed either way.
"""

import asyncio
import fractions
import json
import sys
import time
import urllib.request
import uuid

import av
import numpy
from aiortc import (
    MediaStreamTrack,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import AudioStreamTrack
import websockets
from websockets.exceptions import ConnectionClosed

FPS = 20
WIDTH, HEIGHT = 320, 240
RESUME_WINDOW = 10.0  # s, the window that contains the drop
DROP_AT = 3.0  # s into that window


class CountingCamera(MediaStreamTrack):
    """A synthetic camera: FPS frames per second of a moving gradient, counted as they are sent."""

    kind = "video"

    def __init__(self):
        super().__init__()
        self.sent = 0
        self._start = None
        self._base = numpy.tile(numpy.arange(WIDTH, dtype=numpy.uint8), (HEIGHT, 1))

    async def recv(self):
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self.sent / FPS
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        y = ((self._base.astype(numpy.uint16) + self.sent * 4) % 256).astype(numpy.uint8)
        yuv = numpy.concatenate([y, numpy.full((HEIGHT // 2, WIDTH), 128, numpy.uint8)])
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = self.sent * (90000 // FPS)
        frame.time_base = fractions.Fraction(1, 90000)
        self.sent += 1
        return frame


class CountingMicrophone(AudioStreamTrack):
    """aiortc's silent 20 ms audio frames, counted as they are sent."""

    def __init__(self):
        super().__init__()
        self.sent = 0

    async def recv(self):
        frame = await super().recv()
        self.sent += 1
        return frame


class Peer:
    """One participant: its WebSocket, its two peer connections, what it receives."""

    def __init__(self, base, room, name):
        self.base, self.room, self.name = base, room, name
        self.ws = None
        self.pub = RTCPeerConnection()
        self.sub = None
        self.camera = CountingCamera()
        self.microphone = CountingMicrophone()
        self.participant_id = None
        self.resume_token = None
        self.access_token = None
        # mid -> {"participant", "source"} from subscribe_offer's `tracks`
        self.bindings = {}
        # participant id -> list of video frame arrival times (monotonic s)
        self.frames = {}
        # participant id -> audio frames received
        self.audio = {}
        # participant id -> list of audio frame arrival times (monotonic s)
        self.audio_times = {}
        # every signaling message received: (monotonic s, message)
        self.events = []
        self.published = asyncio.get_event_loop().create_future()
        self.tasks = []
        # the read and ping loops of the current socket
        self.signaling = []

    def token(self):
        req = urllib.request.Request(
            f"{self.base}/api/guest-token",
            data=json.dumps({"name": self.name}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)["token"]

    async def send(self, msg):
        await self.ws.send(json.dumps(msg))

    async def start(self):
        self.access_token = self.token()
        ws_url = self.base.replace("http", "ws", 1) + f"/ws?token={self.access_token}"
        self.ws = await websockets.connect(ws_url, max_size=256 * 1024)
        await self.send({"type": "join", "room": self.room, "name": self.name})
        joined = json.loads(await self.ws.recv())
        assert joined["type"] == "joined", joined
        self.participant_id = joined["participant_id"]
        self.resume_token = joined["resume_token"]
        self.start_signaling()
        # Publisher transport: we offer our camera and microphone (sendonly).
        self.pub.addTransceiver(self.camera, direction="sendonly")
        self.pub.addTransceiver(self.microphone, direction="sendonly")
        await self.pub.setLocalDescription(await self.pub.createOffer())
        tracks = []
        for t in self.pub.getTransceivers():
            source = "camera" if t.kind == "video" else "microphone"
            tracks.append({"mid": t.mid, "kind": t.kind, "source": source})
        await self.send({"type": "publish_offer", "sdp": self.pub.localDescription.sdp, "tracks": tracks})
        await asyncio.wait_for(self.published, 20)

    def start_signaling(self):
        self.signaling = [
            asyncio.ensure_future(self.read_loop(self.ws)),
            asyncio.ensure_future(self.ping_loop(self.ws)),
        ]

    def drop(self):
        """Lose the socket abruptly: the TCP connection is aborted, no close frame, no `leave`."""
        for t in self.signaling:
            t.cancel()
        self.ws.transport.abort()

    async def resume(self, before_resume=None):
        """Come back on a new socket; returns the `resumed` message and when `resume` went out.

        The access token is the one ada joined with: the server resumes only a participant whose
        token has the same subject, and every guest token has a new random one (guest-<uuid>), so
        a fresh guest token gets `resume_failed`.
        """
        ws_url = self.base.replace("http", "ws", 1) + f"/ws?token={self.access_token}"
        self.ws = await websockets.connect(ws_url, max_size=256 * 1024)
        if before_resume is not None:
            await before_resume
        await self.send({"type": "resume", "participant_id": self.participant_id, "resume_token": self.resume_token})
        sent_at = time.monotonic()
        reply = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
        self.events.append((time.monotonic(), reply))
        assert reply["type"] == "resumed", reply
        assert reply["participant_id"] == self.participant_id, reply
        assert reply["resume_token"] == self.resume_token, reply
        self.start_signaling()
        return reply, sent_at

    def event_time(self, kind, participant_id, since=0.0):
        for t, msg in self.events:
            if t >= since and msg["type"] == kind and msg.get("participant_id") == participant_id:
                return t
        return None

    async def wait_event(self, kind, participant_id, timeout, since=0.0):
        deadline = time.monotonic() + timeout
        while (t := self.event_time(kind, participant_id, since)) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return t

    async def ping_loop(self, ws):
        try:
            while True:
                await asyncio.sleep(10)
                await ws.send(json.dumps({"type": "ping", "ts": time.time()}))
        except ConnectionClosed:
            return

    async def read_loop(self, ws):
        try:
            async for text in ws:
                await self.handle(json.loads(text))
        except ConnectionClosed:
            return

    async def handle(self, msg):
        self.events.append((time.monotonic(), msg))
        kind = msg["type"]
        if kind == "publish_answer":
            await self.pub.setRemoteDescription(RTCSessionDescription(msg["sdp"], "answer"))
            if not self.published.done():
                self.published.set_result(True)
        elif kind == "subscribe_offer":
            await self.on_subscribe_offer(msg)
        elif kind == "error":
            print(f"{self.name}: server error {msg}", flush=True)

    async def on_subscribe_offer(self, msg):
        for t in msg["tracks"]:
            self.bindings[t["mid"]] = {"participant": t["participant_id"], "source": t["source"]}
        if self.sub is None:
            self.sub = RTCPeerConnection()

            @self.sub.on("track")
            def on_track(track):
                self.tasks.append(asyncio.ensure_future(self.consume(track)))

        await self.sub.setRemoteDescription(RTCSessionDescription(msg["sdp"], "offer"))
        await self.sub.setLocalDescription(await self.sub.createAnswer())
        await self.send({"type": "subscribe_answer", "sdp": self.sub.localDescription.sdp})

    def binding_of(self, track):
        for t in self.sub.getTransceivers():
            if t.receiver.track is track:
                return self.bindings.get(t.mid)
        return None

    async def consume(self, track):
        # Track events fire during setRemoteDescription; the mid is known right after.
        await asyncio.sleep(0)
        binding = self.binding_of(track)
        who = binding["participant"] if binding else f"unknown-{track.id}"
        while True:
            try:
                await track.recv()
            except Exception:
                return
            if track.kind == "video":
                self.frames.setdefault(who, []).append(time.monotonic())
            else:
                self.audio[who] = self.audio.get(who, 0) + 1
                self.audio_times.setdefault(who, []).append(time.monotonic())

    async def close(self):
        for t in self.tasks + self.signaling:
            t.cancel()
        try:
            await self.send({"type": "leave"})
        except Exception:
            pass
        await self.pub.close()
        if self.sub:
            await self.sub.close()
        await self.ws.close()


def metric(base, name):
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


TRANSPORT_COUNTERS = (
    "confab_transport_disconnects_total",
    "confab_transport_failures_total",
    "confab_ice_path_switches_total",
)


def longest_gap(arrivals, t0, t1):
    """The longest time without an arrival in [t0, t1], window edges included."""
    inside = [t for t in arrivals if t0 <= t <= t1]
    return max(b - a for a, b in zip([t0] + inside, inside + [t1])), len(inside)


async def resume_phase(base, ada, bob, failures):
    """ada's socket drops mid-window and ada resumes; media must flow across, then ada leaves."""
    peers = (ada, bob)
    r0 = time.monotonic()
    video0 = {p.name: p.camera.sent for p in peers}
    audio0 = {p.name: p.microphone.sent for p in peers}
    await asyncio.sleep(DROP_AT)
    ada.drop()
    dropped = time.monotonic()
    # The new socket opens at once; `resume` goes out when bob was told ada is reconnecting.
    told = asyncio.ensure_future(bob.wait_event("participant_reconnecting", ada.participant_id, 5.0, dropped))
    try:
        _, resume_sent = await ada.resume(before_resume=told)
        resumed = time.monotonic()
    except Exception as e:  # noqa: BLE001 - any failure to resume is the finding
        failures.append(f"resume: {type(e).__name__} {e}")
        print(f"resume: FAILED {type(e).__name__} {e}", flush=True)
        return
    reconnecting = told.result()
    reconnected = await bob.wait_event("participant_reconnected", ada.participant_id, 2.0, dropped)
    ms = lambda t: f"{(t - dropped) * 1000:.0f} ms" if t is not None else "never"  # noqa: E731
    print(
        f"resume: drop -> bob told participant_reconnecting {ms(reconnecting)}, "
        f"drop -> resumed {ms(resumed)} (resume sent -> resumed {(resumed - resume_sent) * 1000:.0f} ms), "
        f"drop -> bob told participant_reconnected {ms(reconnected)}",
        flush=True,
    )
    if reconnecting is None:
        failures.append("resume: bob never got participant_reconnecting for ada")
    if reconnected is None:
        failures.append("resume: bob got no participant_reconnected for ada within 2 s of resumed")
    await asyncio.sleep(max(0.0, r0 + RESUME_WINDOW - time.monotonic()))
    r1 = time.monotonic()
    for p, q in ((ada, bob), (bob, ada)):
        video_sent = q.camera.sent - video0[q.name]
        audio_sent = q.microphone.sent - audio0[q.name]
        vgap, video = longest_gap(p.frames.get(q.participant_id, []), r0, r1)
        agap, audio = longest_gap(p.audio_times.get(q.participant_id, []), r0, r1)
        print(
            f"resume window ({r1 - r0:.1f} s, drop at +{dropped - r0:.1f} s): {p.name} <- {q.name}: "
            f"{video} video frames of {video_sent} sent, longest gap {vgap * 1000:.0f} ms; "
            f"{audio} audio frames of {audio_sent} sent, longest gap {agap * 1000:.0f} ms",
            flush=True,
        )
        if video < 0.95 * video_sent:
            failures.append(f"resume window {p.name} <- {q.name}: {video} of {video_sent} video frames")
        if audio < 0.95 * audio_sent:
            failures.append(f"resume window {p.name} <- {q.name}: {audio} of {audio_sent} audio frames")
        if vgap > 2.0:
            failures.append(f"resume window {p.name} <- {q.name}: a {vgap:.1f} s video gap")
        if agap > 2.0:
            failures.append(f"resume window {p.name} <- {q.name}: a {agap:.1f} s audio gap")
    for name in TRANSPORT_COUNTERS:
        value = metric(base, name)
        if value != 0:
            print(f"after the resume: {name} {value:.0f}", flush=True)
            failures.append(f"after the resume: {name} = {value}")
    if bob.event_time("participant_left", ada.participant_id) is not None:
        failures.append("bob got participant_left for ada before ada's leave")
    left_sent = time.monotonic()
    await ada.send({"type": "leave"})
    left = await bob.wait_event("participant_left", ada.participant_id, 2.0, left_sent)
    print(
        "leave: bob told participant_left "
        + (f"{(left - left_sent) * 1000:.0f} ms after ada's leave" if left is not None else "not within 2 s"),
        flush=True,
    )
    if left is None:
        failures.append("bob got no participant_left for ada within 2 s of ada's leave")


async def main(base, seconds):
    room = f"aiortc-{uuid.uuid4().hex[:8]}"
    peers = [Peer(base, room, "ada"), Peer(base, room, "bob")]
    for p in peers:
        await p.start()
    # Wait until each receives the other's video.
    deadline = time.monotonic() + 30
    while not all(len(p.frames.get(q.participant_id, [])) > 20 for p in peers for q in peers if q is not p):
        if time.monotonic() > deadline:
            raise AssertionError(f"no video within 30 s: {[{k: len(v) for k, v in p.frames.items()} for p in peers]}")
        await asyncio.sleep(0.25)
    t0 = time.monotonic()
    sent0 = {p.participant_id: p.camera.sent for p in peers}
    mic0 = {p.participant_id: p.microphone.sent for p in peers}
    audio0 = {(p.name, k): v for p in peers for k, v in p.audio.items()}
    await asyncio.sleep(seconds)
    t1 = time.monotonic()
    failures = []
    for p in peers:
        for q in peers:
            if q is p:
                continue
            arrivals = [t for t in p.frames.get(q.participant_id, []) if t0 <= t <= t1]
            sent = q.camera.sent - sent0[q.participant_id]
            gaps = [b - a for a, b in zip([t0] + arrivals, arrivals + [t1])]
            worst = max(gaps) if gaps else seconds
            audio = p.audio.get(q.participant_id, 0) - audio0.get((p.name, q.participant_id), 0)
            audio_sent = q.microphone.sent - mic0[q.participant_id]
            print(
                f"{p.name} <- {q.name}: {len(arrivals)} video frames of {sent} sent "
                f"({len(arrivals) / (t1 - t0):.1f} fps), longest gap {worst * 1000:.0f} ms, "
                f"{audio} audio frames of {audio_sent} sent",
                flush=True,
            )
            if len(arrivals) < 0.9 * sent:
                failures.append(f"{p.name} <- {q.name}: {len(arrivals)} of {sent} frames")
            if worst > 1.0:
                failures.append(f"{p.name} <- {q.name}: a {worst:.1f} s gap")
            if audio < 0.9 * audio_sent:
                failures.append(f"{p.name} <- {q.name}: {audio} of {audio_sent} audio frames")
    for name in (
        "confab_transport_disconnects_total",
        "confab_transport_failures_total",
        "confab_ice_path_switches_total",
    ):
        value = metric(base, name)
        print(f"{name} {value:.0f}", flush=True)
        if value != 0:
            failures.append(f"{name} = {value}")
    await resume_phase(base, peers[0], peers[1], failures)
    for p in peers:
        await p.close()
    if failures:
        print("FAILED: " + "; ".join(failures), flush=True)
        return 1
    print("ok: two aiortc peers kept their media for the whole call and across ada's resume", flush=True)
    return 0


if __name__ == "__main__":
    base = sys.argv[1].rstrip("/")
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    sys.exit(asyncio.run(main(base, seconds)))
