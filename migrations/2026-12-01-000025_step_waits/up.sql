-- A step that answered "not yet, look again later" waits without holding a
-- worker: its row is due again later, its attempt not counted. This is when
-- the current attempt's wait began, so that the step's timeout bounds the
-- whole wait; NULL when the row is not waiting.
ALTER TABLE outbox ADD COLUMN waiting_since TIMESTAMPTZ;
