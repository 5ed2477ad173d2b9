-- Traps: web honeypot visits, sensors, SMTP sessions and what the trap refused.
-- Every row arrives through the trap spool (traps/smtp/spool.py) and carries its own unique id,
-- so the spool drain can re-apply a segment after a crash without duplicating anything.

CREATE TABLE IF NOT EXISTS visits (
    id             VARCHAR PRIMARY KEY,  -- 'v' + visit number encoded in the address
    seq            BIGINT NOT NULL,      -- the visit number itself
    address        VARCHAR NOT NULL,     -- trap address issued to this visit
    visited_at     TIMESTAMP NOT NULL,
    ip             VARCHAR,              -- client IP (X-Forwarded-For only from trusted proxies)
    user_agent     VARCHAR,
    method         VARCHAR,
    host           VARCHAR,
    path           VARCHAR,
    referer        VARCHAR,
    headers        VARCHAR,              -- JSON object of request headers
    sensor_id      VARCHAR,              -- NULL = our own honeypot, else the sensor that asked
    ignored_robots BOOLEAN,              -- fetched a path robots.txt / meta robots forbid
    read_robots    BOOLEAN               -- this IP fetched /robots.txt before this visit
);

CREATE TABLE IF NOT EXISTS sensors (
    id         VARCHAR PRIMARY KEY,
    name       VARCHAR NOT NULL,
    key_sha256 VARCHAR NOT NULL,         -- only the hash of the API key is kept
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS smtp_sessions (
    session_id       VARCHAR PRIMARY KEY,
    peer_ip          VARCHAR,
    peer_port        INTEGER,
    started_at       TIMESTAMP,
    ended_at         TIMESTAMP,
    helo             VARCHAR,
    helo_shape       VARCHAR,            -- fqdn | single-label | ip-literal | bare-ip | empty ...
    mail_from        VARCHAR[],          -- every MAIL FROM of the session, accepted or not
    rcpt_to          VARCHAR[],          -- every RCPT TO, accepted or refused (relay attempts too)
    esmtp            BOOLEAN,
    tls              BOOLEAN,
    pipelined        BOOLEAN,            -- sent commands before our reply to the previous one
    commands         VARCHAR[],          -- verbs in order
    first_command_ms DOUBLE,             -- banner to first command
    median_gap_ms    DOUBLE,             -- median time between commands
    messages         INTEGER,            -- messages accepted with 250
    fingerprint      VARCHAR,            -- short hash of fingerprint_text
    fingerprint_text VARCHAR,            -- the session shape that was hashed
    end_reason       VARCHAR             -- quit | disconnect | timeout | limit | shutdown
);

CREATE TABLE IF NOT EXISTS relay_attempts (
    id           VARCHAR PRIMARY KEY,
    session_id   VARCHAR,
    peer_ip      VARCHAR,
    mail_from    VARCHAR,
    rcpt_to      VARCHAR,
    domain       VARCHAR,
    attempted_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS limit_events (
    id         VARCHAR PRIMARY KEY,
    session_id VARCHAR,
    peer_ip    VARCHAR,
    kind       VARCHAR,                  -- size | recipients | connections | rate | command-timeout | data-timeout | line-length
    reply      VARCHAR,                  -- the SMTP reply we sent
    detail     VARCHAR,
    hit_at     TIMESTAMP
);

CREATE TABLE IF NOT EXISTS dictionary_attacks (
    message_id VARCHAR NOT NULL,
    addr       VARCHAR NOT NULL,         -- the undecodable address on a trap domain
    domain     VARCHAR,
    reason     VARCHAR,                  -- unparseable | bad-mac
    sender_ip  VARCHAR,
    mail_from  VARCHAR,
    seen_at    TIMESTAMP
);

CREATE TABLE IF NOT EXISTS comment_spam (
    id         VARCHAR PRIMARY KEY,
    visit_id   VARCHAR,
    posted_at  TIMESTAMP,
    ip         VARCHAR,
    user_agent VARCHAR,
    name       VARCHAR,
    email      VARCHAR,
    url        VARCHAR,
    body       VARCHAR,
    urls       VARCHAR[]
);
