-- Fingerprints (domain-separated SHA-256) of the server's secrets, recorded by the first
-- instance that served this database; an instance with other secrets refuses to start.
CREATE TABLE server_secrets (
    name        TEXT COLLATE "C" PRIMARY KEY,
    fingerprint BYTEA NOT NULL,
    first_at_ms BIGINT NOT NULL
);
