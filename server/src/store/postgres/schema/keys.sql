-- KeyPackages (a single-use FIFO queue per identity plus one last-resort KeyPackage) and
-- hybrid public keys.

-- One row per identity that ever queued a KeyPackage: next_n only grows; queued equals the
-- identity's rows in key_packages. Fetches and uploads lock this row, so a queue's pops are
-- serialized and never hand one KeyPackage out twice.
CREATE TABLE key_package_meta (
    identity_key BYTEA PRIMARY KEY,
    next_n       BIGINT NOT NULL,
    queued       BIGINT NOT NULL
);

CREATE TABLE key_packages (
    identity_key BYTEA NOT NULL,
    n            BIGINT NOT NULL,
    key_package  BYTEA NOT NULL,
    PRIMARY KEY (identity_key, n)
);

CREATE TABLE last_resort_key_packages (
    identity_key BYTEA PRIMARY KEY,
    key_package  BYTEA NOT NULL
);

CREATE TABLE hybrid_keys (
    identity_key    BYTEA PRIMARY KEY,
    x25519_public   BYTEA NOT NULL,
    mlkem768_public BYTEA NOT NULL,
    signature       BYTEA NOT NULL,
    created_at_ms   BIGINT NOT NULL
);
