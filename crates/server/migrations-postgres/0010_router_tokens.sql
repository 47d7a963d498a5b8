-- Router tokens (issue 18): a `suanli gateway`'s credential, allowed the
-- router API only.
ALTER TABLE tokens DROP CONSTRAINT tokens_scope_check;
ALTER TABLE tokens ADD CONSTRAINT tokens_scope_check
    CHECK (scope IN ('admin', 'tenant', 'agent', 'router'));
