-- Who is in which room, as the webhook writer last recorded it (issue 10). Rooms live in memory, so without this a
-- server killed with rooms open could never report their `participant_left` and `room_finished`: the next start
-- of the same node finds its rows here, reports them left (reason `closed`) and the rooms finished, then deletes
-- them. Each row is written and deleted in the same transaction as the outbox rows of its join and its leave.
CREATE TABLE webhook_presence (
    -- the server hosting the room (`--node-id`): each node reports only its own rooms
    node_id         TEXT        NOT NULL,
    room_id         TEXT        NOT NULL,
    -- the media plane's participant id
    participant_id  TEXT        NOT NULL,
    -- the token subject (an address for wallet users)
    user_id         TEXT        NOT NULL,
    name            TEXT        NOT NULL,
    joined_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (node_id, room_id, participant_id)
);
