-- Sending-software traits per message (analyze/sender_traits.py, docs/campaigns.md): derived,
-- rebuilt from the raw archive and stored hops whenever missing.
CREATE TABLE IF NOT EXISTS sender_traits (
    message_id     VARCHAR PRIMARY KEY,
    msgid_shape    VARCHAR,   -- Message-ID local part as character-class runs
    boundary_shape VARCHAR,   -- top-level MIME boundary, same abstraction
    header_order   VARCHAR,   -- the sender's header names in order, as spelled
    mailer         VARCHAR,   -- X-Mailer (or User-Agent), whitespace collapsed
    helo_shape     VARCHAR    -- HELO kind / SMTP dialect word of the receiving hop
);
