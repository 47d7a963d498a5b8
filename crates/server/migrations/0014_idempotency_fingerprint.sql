-- What a keyed submission asked for (SHA-256 of its request, as the
-- server read it): the same key with another request is refused (422)
-- instead of answering a job that is not the one asked for.
ALTER TABLE jobs ADD COLUMN idem_hash TEXT;
