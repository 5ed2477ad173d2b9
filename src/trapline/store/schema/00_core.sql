-- Core tables. All timestamps are UTC (TIMESTAMP without zone). Documented in docs/schema.md.
-- Files in this folder are applied in name order on every open; each statement is idempotent.

CREATE TABLE IF NOT EXISTS raw (
    id          VARCHAR PRIMARY KEY,   -- lowercase hex SHA-256 of the exact bytes
    size        BIGINT NOT NULL,       -- uncompressed length in bytes
    codec       VARCHAR NOT NULL,      -- 'zstd' or 'none'
    data        BLOB NOT NULL,         -- the bytes, compressed with codec
    source      VARCHAR,               -- where the bytes were first seen
    envelope    VARCHAR,               -- SMTP envelope as JSON (trap mail), else NULL
    ingested_at TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS messages (
    id                 VARCHAR PRIMARY KEY,
    source             VARCHAR,
    size               BIGINT NOT NULL,
    received_at        TIMESTAMP,       -- top trusted hop's time, else Date header
    received_at_source VARCHAR,         -- 'trap' | 'received' | 'date' | 'none'
    date               TIMESTAMP,       -- Date: header as parsed
    date_flags         VARCHAR[],
    message_id         VARCHAR,
    subject            VARCHAR,
    from_name          VARCHAR,
    from_addr          VARCHAR,
    from_domain        VARCHAR,
    origin_ip          VARCHAR,
    origin_hop         INTEGER,
    body_text          VARCHAR,
    n_hops             INTEGER,
    n_urls             INTEGER,
    n_attachments      INTEGER,
    defects            VARCHAR[],
    -- filled by later stages
    origin_asn         INTEGER,
    origin_prefix      VARCHAR,
    routing_snapshot   VARCHAR,
    campaign_id        VARCHAR,
    trap_visit_id      VARCHAR,
    ingested_at        TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS recipients (
    message_id    VARCHAR NOT NULL,
    kind          VARCHAR NOT NULL,     -- 'to' | 'cc' | 'rcpt' (SMTP envelope)
    name          VARCHAR,
    addr          VARCHAR,
    domain        VARCHAR,
    trap_visit_id VARCHAR
);

CREATE TABLE IF NOT EXISTS hops (
    message_id VARCHAR NOT NULL,
    idx        INTEGER NOT NULL,        -- 0 = top (most recent) Received header
    from_helo  VARCHAR,
    from_rdns  VARCHAR,
    from_ip    VARCHAR,
    by_host    VARCHAR,
    protocol   VARCHAR,
    smtp_id    VARCHAR,
    for_addr   VARCHAR,
    ts         TIMESTAMP,
    trusted    BOOLEAN,
    raw        VARCHAR
);

CREATE TABLE IF NOT EXISTS urls (
    message_id        VARCHAR NOT NULL,
    url               VARCHAR NOT NULL,
    host              VARCHAR,
    registered_domain VARCHAR,
    -- 'text' | 'html-text' | 'href' | 'src' | 'action' | 'background' | 'refresh' | 'base'
    source            VARCHAR,
    obfuscated        BOOLEAN,
    part              VARCHAR           -- 'plain.1', 'html.1', 'attachment.2/html.1', ...
);
-- Stores made before URLs recorded their MIME part.
ALTER TABLE urls ADD COLUMN IF NOT EXISTS part VARCHAR;

CREATE TABLE IF NOT EXISTS attachments (
    message_id   VARCHAR NOT NULL,
    filename     VARCHAR,
    content_type VARCHAR,
    size         BIGINT,
    sha256       VARCHAR
);

-- Messages archived in raw that could not be parsed (id set), and sources that yielded no bytes
-- at all (id NULL). seen = raw rows + source problems = messages + quarantine rows.
CREATE TABLE IF NOT EXISTS quarantine (
    id      VARCHAR,
    source  VARCHAR,
    reason  VARCHAR NOT NULL,
    detail  VARCHAR,
    size    BIGINT,
    logged_at TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS ingest_runs (
    run_id      VARCHAR PRIMARY KEY,
    started_at  TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    sources     VARCHAR[],
    read        BIGINT,
    new         BIGINT,
    duplicates  BIGINT,
    quarantined BIGINT,
    problems    BIGINT
);

-- What a message is, given at ingest (`--label`, default 'spam'): 'spam', 'ham' or a name of
-- lowercase letters, digits, '.', '_', '-'. Kept on the raw row so a re-parse keeps it; analyses
-- and reports count label = 'spam' unless asked for another label or all.
ALTER TABLE raw ADD COLUMN IF NOT EXISTS label VARCHAR DEFAULT 'spam';
ALTER TABLE messages ADD COLUMN IF NOT EXISTS label VARCHAR DEFAULT 'spam';
-- The --trust set a message was last parsed with (sorted, comma-separated; '' = none beyond
-- the private ranges; NULL = not recorded): ingest says when known bytes arrive with another.
ALTER TABLE raw ADD COLUMN IF NOT EXISTS trust VARCHAR;
