-- Federation: per-peer outboxes and the relay ids of messages received from peers.

-- One row per peer that ever had an outbox entry: next_position only grows (positions are
-- never reused); messages and bytes equal the count and payload bytes of its `outbox` rows.
CREATE TABLE outbox_meta (
    peer          TEXT COLLATE "C" PRIMARY KEY,
    next_position BIGINT NOT NULL,
    messages      BIGINT NOT NULL,
    bytes         BIGINT NOT NULL
);

CREATE TABLE outbox (
    peer                TEXT COLLATE "C" NOT NULL,
    position            BIGINT NOT NULL,
    relay_id            BYTEA NOT NULL,
    sender              BYTEA NOT NULL,
    sender_identity_key BYTEA NOT NULL,
    recipient           BYTEA NOT NULL,
    channel_id          BYTEA,
    payload             BYTEA NOT NULL,
    enqueued_at_ms      BIGINT NOT NULL,
    ttl_ms              BIGINT NOT NULL,
    PRIMARY KEY (peer, position)
);

-- Written in the transaction of the message it stored; forgotten after remember_until_ms.
CREATE TABLE relay_ids (
    peer              TEXT COLLATE "C" NOT NULL,
    relay_id          BYTEA NOT NULL,
    remember_until_ms BIGINT NOT NULL,
    seq               BIGINT NOT NULL,
    CONSTRAINT relay_ids_pkey PRIMARY KEY (peer, relay_id)
);
CREATE INDEX relay_ids_by_expiry ON relay_ids (remember_until_ms);
