-- Requests to the token endpoints per client address (an IPv4 address or an IPv6 /64) and second, added up by
-- every node when `http.rate_limit.shared` is on, so that nodes behind one load balancer allow the configured
-- rate in total. Each node adds its counts a few times a second; rows older than the limit's window are deleted.
CREATE TABLE rate_limit_hits (
    client TEXT NOT NULL,
    slot BIGINT NOT NULL,
    hits BIGINT NOT NULL,
    PRIMARY KEY (client, slot)
);
