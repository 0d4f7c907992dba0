-- Authentication and audit (issue 7).
--
-- Bearer tokens, stored as the SHA-256 of the token: a token is 32
-- random bytes, so a fast hash is as good as a slow one, and the store
-- never holds what would let someone in. Revoking deletes the row; the
-- event log keeps the creation and the revocation.
CREATE TABLE tokens (
    name       TEXT PRIMARY KEY,
    role       TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL DEFAULT ''
);

-- Who holds a lease: the token (or certificate) that acquired it, '' when
-- berth ran without authentication. Only that principal, or an admin,
-- may heartbeat or end it. A waiting request remembers its principal for
-- the lease a handoff gives it.
ALTER TABLE leases ADD COLUMN principal TEXT NOT NULL DEFAULT '';
ALTER TABLE requests ADD COLUMN principal TEXT NOT NULL DEFAULT '';

-- Where each mutation came from: the client's address.
ALTER TABLE events ADD COLUMN remote TEXT NOT NULL DEFAULT '';
