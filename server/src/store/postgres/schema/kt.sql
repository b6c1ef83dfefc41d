-- The key transparency log: leaves, the hashes of every complete subtree (qpq_kt::tree),
-- and its size. Nothing is ever updated or removed except kt_meta.size, which only grows.

-- One row: the log's size. Every append locks it (FOR UPDATE), so leaves get dense,
-- totally ordered indexes, and a leaf, its nodes and the new size commit together.
CREATE TABLE kt_meta (
    id   BOOLEAN PRIMARY KEY CHECK (id),
    size BIGINT NOT NULL
);
INSERT INTO kt_meta (id, size) VALUES (TRUE, 0);

-- data is the leaf data the leaf hash covers (kt.proto); kind, username and identity_key
-- are copied out of it for the lookups.
CREATE TABLE kt_leaves (
    leaf_index   BIGINT PRIMARY KEY,
    kind         SMALLINT NOT NULL,
    username     TEXT COLLATE "C" NOT NULL,
    identity_key BYTEA NOT NULL,
    data         BYTEA NOT NULL
);
CREATE INDEX kt_leaves_by_username ON kt_leaves (username, leaf_index);
CREATE INDEX kt_leaves_by_identity ON kt_leaves (identity_key, leaf_index);
-- At most one revocation (kind 2) per identity key.
CREATE UNIQUE INDEX kt_leaves_one_revocation ON kt_leaves (identity_key) WHERE kind = 2;

-- The complete aligned subtree covering leaves [node_index * 2^node_level, ...).
CREATE TABLE kt_nodes (
    node_level SMALLINT NOT NULL,
    node_index BIGINT NOT NULL,
    hash       BYTEA NOT NULL,
    PRIMARY KEY (node_level, node_index)
);
