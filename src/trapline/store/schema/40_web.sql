-- API keys for the REST API and the dashboard (docs/web.md). Only the SHA-256 of a key is kept;
-- the key itself is printed once when it is made. Sensor keys also have a row in sensors (same
-- hash), so a sensor uses one key for the honeypot's address API and its own data in the API.
CREATE TABLE IF NOT EXISTS api_keys (
    id         VARCHAR PRIMARY KEY,      -- 'k' + 12 hex; sensor keys: the sensor's id
    name       VARCHAR NOT NULL,
    role       VARCHAR NOT NULL,         -- admin | analyst | sensor
    key_sha256 VARCHAR NOT NULL,
    sensor_id  VARCHAR,                  -- role sensor: whose visits and addresses it may read
    created_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP
);
