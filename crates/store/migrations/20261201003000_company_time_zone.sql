-- The company's time zone (an IANA name): leaderboard and activity periods given as dates run
-- from its midnight to its midnight, not UTC's.
ALTER TABLE companies ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC';
-- After how many minutes without a webhook an integration with active workflows shows red.
ALTER TABLE companies ADD COLUMN silence_alert_minutes integer NOT NULL DEFAULT 60
    CHECK (silence_alert_minutes BETWEEN 1 AND 10080);
