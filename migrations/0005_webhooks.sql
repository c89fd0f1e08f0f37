-- Durable webhooks (issue 10): the endpoints events go to, and the outbox of deliveries.
-- Same rules as the other files: types both backends accept, no server-side defaults; timestamps written by the
-- application.

-- Where events are delivered. Each server rewrites `enabled` at start-up from its own settings (`--webhook-url`,
-- `--langdao-events-url`): servers sharing one database must be given the same ones. Rows are never deleted, so
-- deliveries keep their endpoint; deliveries to a disabled endpoint wait until it is enabled again.
CREATE TABLE webhook_endpoints (
    id          UUID        NOT NULL PRIMARY KEY,
    url         TEXT        NOT NULL,
    -- standard: Standard Webhooks bodies {type, timestamp, data}; langdao: the LangDAO `/api/webrtc-events` bodies
    kind        TEXT        NOT NULL CHECK (kind IN ('standard', 'langdao')),
    enabled     BOOLEAN     NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    CONSTRAINT webhook_endpoints_url_kind_key UNIQUE (url, kind)
);

-- One row per (event, endpoint), written in the same transaction as the state the event reports (paid sessions,
-- settlements) or by the room-event writer (rooms and participants). The delivery worker leases due rows, posts
-- `body` signed with the event id, and marks the row delivered on a 2xx; anything else is retried with back-off.
CREATE TABLE webhook_outbox (
    -- `msg_<uuid v7>`: the `webhook-id` header, the same for every endpoint of one event (receivers dedupe on it)
    event_id        TEXT        NOT NULL,
    endpoint_id     UUID        NOT NULL REFERENCES webhook_endpoints (id),
    -- e.g. room_started, paid_session_ended, or for langdao endpoints session-ended
    event_type      TEXT        NOT NULL,
    -- the exact JSON body posted (the signature covers it)
    body            TEXT        NOT NULL,
    -- pending: not yet acknowledged; delivered: a 2xx came back; expired: `expires_at` passed first
    state           TEXT        NOT NULL CHECK (state IN ('pending', 'delivered', 'expired')),
    -- failed attempts so far
    attempts        BIGINT      NOT NULL,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    last_error      TEXT,
    -- the worker holding the row and until when (a crashed worker's lease runs out)
    leased_by       TEXT,
    lease_until     TIMESTAMPTZ,
    -- only for events that mean nothing late (LangDAO heartbeats); NULL: delivered however late
    expires_at      TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    delivered_at    TIMESTAMPTZ,
    PRIMARY KEY (event_id, endpoint_id)
);

-- The worker's query: `WHERE state = 'pending' AND next_attempt_at <= $1 ORDER BY next_attempt_at`.
CREATE INDEX webhook_outbox_due_idx ON webhook_outbox (state, next_attempt_at);
