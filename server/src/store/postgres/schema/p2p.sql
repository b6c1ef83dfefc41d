-- Published P2P endpoints, one per (account, device); an empty device id is the slot of
-- sessions without a device. relay_url and direct_addrs are UTF-8 kept as bytes.

CREATE TABLE p2p_endpoints (
    identity_key    BYTEA NOT NULL,
    device_id       BYTEA NOT NULL,
    node_id         BYTEA NOT NULL,
    relay_url       BYTEA NOT NULL,
    direct_addrs    BYTEA[] NOT NULL,
    published_at_ms BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    PRIMARY KEY (identity_key, device_id)
);
CREATE INDEX p2p_endpoints_by_expiry ON p2p_endpoints (expires_at_ms);
