-- Every step rewrites its tenant_steps row twice (started, then done) and
-- its outbox row once, none of them in an indexed column once a worker
-- holds the row. PostgreSQL rewrites such a row in place, without new
-- index entries (a HOT update), only when its page has room for the new
-- version; packed full, nearly every update went to another page and
-- added an entry to every index. Room left free in each page keeps those
-- updates HOT. It applies to pages written from now on.
ALTER TABLE tenant_steps SET (fillfactor = 60);
ALTER TABLE outbox SET (fillfactor = 50);
