-- When each event row was written, on the database's clock. Event ids are
-- drawn when a row is inserted but become visible when its transaction
-- commits, so a reader can see id 101 before id 100; EventList uses this
-- column to return only events that no transaction still running can
-- precede (see EventList). Rows written before this migration keep NULL:
-- they are long settled. The column is added without a default first so
-- that the table is not rewritten.
ALTER TABLE events ADD COLUMN written_at TIMESTAMPTZ;
ALTER TABLE events ALTER COLUMN written_at SET DEFAULT clock_timestamp();
