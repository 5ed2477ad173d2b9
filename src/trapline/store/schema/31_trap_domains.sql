-- Every domain this store's traps have issued addresses on, recorded by `trapline serve`, so
-- `address decode` and the harvest linkage know them without a config file naming them.
CREATE TABLE IF NOT EXISTS trap_domains (
    domain      VARCHAR PRIMARY KEY,   -- lowercase, without a trailing dot
    first_used  TIMESTAMP NOT NULL     -- UTC: the first serve that issued addresses on it
);
