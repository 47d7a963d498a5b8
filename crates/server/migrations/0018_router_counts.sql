-- What each model router (a server replica's own, or a `suanli gateway`)
-- counts, so several routers behave as one (issue 18): per service its
-- requests in flight and requests so far; per tenant the requests and
-- tokens it let in so far (monotone counters: a lost report loses
-- nothing). Each router writes its rows every tick and reads the others'
-- fresh ones; rows of routers silent for ten minutes are deleted.
CREATE TABLE router_counts (
    router TEXT NOT NULL,
    kind TEXT NOT NULL,
    id INTEGER NOT NULL,
    inflight INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (router, kind, id)
);
CREATE INDEX router_counts_at ON router_counts (at_ms);
