-- Routing snapshots, AS names, per-IP routing answers, external feeds (docs/networks.md).
-- ASNs are BIGINT here: 4-byte ASNs reach 4,294,967,295, past INTEGER.

CREATE TABLE IF NOT EXISTS routing_snapshots (
    snapshot_id VARCHAR PRIMARY KEY,   -- '<file stem>@<as_of>', e.g. 'ipasn_20080501_v12@2008-05-01'
    as_of       DATE NOT NULL,         -- the date the table describes
    source      VARCHAR,               -- file it came from
    format      VARCHAR,               -- 'pyasn' | 'mrt' | 'ip-range-csv'
    n_v4        BIGINT,                -- IPv4 prefixes / ranges
    n_v6        BIGINT,
    n_asns      BIGINT,
    notes       VARCHAR[],             -- truncation and skipped records, as the reader saw them
    imported_at TIMESTAMP NOT NULL
);

-- One row per announced block; the lookup index itself lives in <data_dir>/routing/<id>/*.npy.
CREATE TABLE IF NOT EXISTS routing_prefixes (
    snapshot_id VARCHAR NOT NULL,
    family      TINYINT NOT NULL,      -- 4 | 6
    prefix      VARCHAR NOT NULL,      -- CIDR, or 'first-last' for a non-CIDR range
    asn         BIGINT NOT NULL,       -- origin AS
    addresses   DOUBLE NOT NULL,       -- size of the block
    first4      BIGINT,                -- IPv4 only: first and last address as integers
    last4       BIGINT
);

CREATE TABLE IF NOT EXISTS as_names (
    asn    BIGINT NOT NULL,
    name   VARCHAR NOT NULL,
    source VARCHAR NOT NULL,           -- file (or bundle) the name came from
    as_of  DATE,                       -- when the name was current; lookups pick the nearest
    PRIMARY KEY (asn, source)
);

-- The answer for every address trapline maps: message origins, external hops, literal-IP URL
-- hosts, honeypot visits, dictionary attackers and feed indicators. One table instead of columns
-- on each area's tables, so scoring reads one place and other areas' schemas stay theirs.
CREATE TABLE IF NOT EXISTS ip_routing (
    subject     VARCHAR NOT NULL,      -- 'origin' | 'hop' | 'url' | 'visit' | 'dictionary' | 'feed'
    subject_id  VARCHAR NOT NULL,      -- message id, '<message id>:<hop idx>', visit id, ...
    message_id  VARCHAR,               -- for origin / hop / url rows
    ip          VARCHAR NOT NULL,
    seen_at     TIMESTAMP,             -- the time the mapping was made for
    asn         BIGINT,
    prefix      VARCHAR,
    snapshot_id VARCHAR,
    enriched_at TIMESTAMP NOT NULL
);

-- Every time a feed said something, as imported; duplicates across imports are not repeated.
CREATE TABLE IF NOT EXISTS feed_sightings (
    kind           VARCHAR NOT NULL,   -- drop | edrop | dropv6 | asn-drop | cc | landing | harvester
    indicator      VARCHAR NOT NULL,   -- normalised: CIDR, IP, 'AS123', domain or URL
    indicator_type VARCHAR NOT NULL,   -- cidr | ip | asn | domain | url
    first_seen     TIMESTAMP NOT NULL,
    last_seen      TIMESTAMP NOT NULL,
    source         VARCHAR NOT NULL,
    family         VARCHAR,            -- malware family or list detail (AS name for ASN-DROP JSON)
    imported_at    TIMESTAMP NOT NULL
);

-- Sightings merged per (kind, indicator): first/last seen, every listing date, routing answer.
CREATE TABLE IF NOT EXISTS feed_indicators (
    kind           VARCHAR NOT NULL,
    indicator      VARCHAR NOT NULL,
    indicator_type VARCHAR NOT NULL,
    first_seen     TIMESTAMP NOT NULL,
    last_seen      TIMESTAMP NOT NULL,
    n_sightings    BIGINT NOT NULL,
    dates          DATE[],
    sources        VARCHAR[],
    family         VARCHAR,
    asn            BIGINT,             -- the ASN itself for asn indicators, else the routing answer
    prefix         VARCHAR,
    snapshot_id    VARCHAR,
    PRIMARY KEY (kind, indicator)
);
