-- Fingerprints, campaigns and botnets (docs/campaigns.md). Derived tables: all of them
-- can be rebuilt from messages with `trapline analyze campaigns --rebuild`.

-- One row per fingerprinted message. seq is the processing order that defines the campaign
-- link rule (analyze/lsh.py), so clustering in pieces equals clustering everything at once.
CREATE TABLE IF NOT EXISTS signatures (
    message_id       VARCHAR PRIMARY KEY,
    seq              BIGINT NOT NULL,
    minhash          BLOB NOT NULL,      -- 128 x uint32, little-endian
    n_words          INTEGER,            -- normalised words (0 = no text: never joins by text)
    url_templates    VARCHAR[],          -- specific (per-copy) URL templates, AutoRE-style
    subject_template VARCHAR,
    received_at      TIMESTAMP,
    campaign_seq     BIGINT,             -- seq of the campaign's root (earliest) member
    computed_at      TIMESTAMP NOT NULL
);

-- LSH bucket state: the first and the last member (by seq) of every band bucket seen.
CREATE TABLE IF NOT EXISTS lsh_buckets (
    key       BIGINT NOT NULL,           -- band key (band index mixed in)
    first_seq BIGINT NOT NULL,
    last_seq  BIGINT NOT NULL
);

-- URL-template state: the anchor (first member) of every (template, period) group.
CREATE TABLE IF NOT EXISTS url_buckets (
    key        BIGINT NOT NULL,          -- template hash with the period in the low 20 bits
    anchor_seq BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS campaign_state (
    id         INTEGER PRIMARY KEY,      -- always 1
    last_seq   BIGINT NOT NULL,          -- signatures up to here are clustered
    params     VARCHAR NOT NULL,         -- thresholds used; a change forces a rebuild
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS campaigns (
    id             VARCHAR PRIMARY KEY,  -- 'c' + first 16 hex of the root message id
    root_seq       BIGINT NOT NULL,
    size           BIGINT NOT NULL,
    first_seen     TIMESTAMP,
    last_seen      TIMESTAMP,
    representative VARCHAR,              -- root message id
    subjects       VARCHAR[],            -- most frequent subject templates
    url_templates  VARCHAR[],
    domains        VARCHAR[],            -- registered domains of the URLs
    origin_ips     VARCHAR[],
    n_origin_ips   BIGINT,
    asns           BIGINT[],
    updated_at     TIMESTAMP NOT NULL
);

-- When two campaigns turn out to be one, the younger id points here to the surviving one.
CREATE TABLE IF NOT EXISTS campaign_merges (
    old_id    VARCHAR NOT NULL,
    new_id    VARCHAR NOT NULL,
    merged_at TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS botnets (
    id          VARCHAR PRIMARY KEY,     -- 'b' + the id of its oldest campaign (minus the 'c')
    n_campaigns BIGINT NOT NULL,
    n_hosts     BIGINT NOT NULL,
    messages    BIGINT NOT NULL,
    first_seen  TIMESTAMP,
    last_seen   TIMESTAMP,
    asns        BIGINT[],
    families    VARCHAR[],               -- C&C families linked from feeds or by explicit mapping
    updated_at  TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS botnet_campaigns (
    botnet_id   VARCHAR NOT NULL,
    campaign_id VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS botnet_hosts (
    botnet_id VARCHAR NOT NULL,
    host      VARCHAR NOT NULL,          -- origin IP, or 'smtp:<session fingerprint>'
    kind      VARCHAR NOT NULL,          -- 'ip' | 'session'
    messages  BIGINT NOT NULL
);

-- Explicit links from a sending host or campaign to a malware family (user supplied); feed
-- indicators with a family name are linked automatically when their IP is a botnet host.
CREATE TABLE IF NOT EXISTS botnet_family_map (
    match_kind VARCHAR NOT NULL,         -- 'host' | 'campaign' | 'domain'
    value      VARCHAR NOT NULL,
    family     VARCHAR NOT NULL
);
