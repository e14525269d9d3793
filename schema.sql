-- schema.sql is applied at every start, inside one transaction that holds an
-- advisory lock, so it must be idempotent. It also upgrades a database of the
-- original FastAPI service in place: that service created users(id,
-- username, password_hashed) and incidents(id, title, description, severity,
-- status, created_at) with varchar columns and a naive timestamp.

CREATE TABLE IF NOT EXISTS users (
    id              serial PRIMARY KEY,
    username        text NOT NULL,
    password_hashed text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS incidents (
    id          serial PRIMARY KEY,
    title       text NOT NULL,
    description text NOT NULL DEFAULT '',
    severity    text NOT NULL,
    status      text NOT NULL DEFAULT 'open',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    resolved_by integer REFERENCES users (id) ON DELETE SET NULL
);

-- Columns the original did not have; on a fresh database these are no-ops.
ALTER TABLE users ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE incidents
    ADD COLUMN IF NOT EXISTS updated_at timestamptz,
    ADD COLUMN IF NOT EXISTS resolved_at timestamptz,
    ADD COLUMN IF NOT EXISTS resolved_by integer REFERENCES users (id) ON DELETE SET NULL;

-- Upgrade the original's column types and fill what it left empty. Each step
-- looks at the catalog first, so a current database costs no table scan.
DO $$
DECLARE
    col record;
BEGIN
    -- The original's varchar limits disagreed with its validation (a long
    -- username was a 500); text with checks in the application is the fix.
    -- A native enum column becomes text as well.
    FOR col IN
        SELECT table_name, column_name FROM information_schema.columns
        WHERE table_schema = current_schema()
          AND table_name IN ('users', 'incidents')
          AND data_type IN ('character varying', 'character', 'USER-DEFINED')
    LOOP
        EXECUTE format('ALTER TABLE %I ALTER COLUMN %I TYPE text USING %I::text',
                       col.table_name, col.column_name, col.column_name);
    END LOOP;

    -- The original stored naive UTC timestamps.
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'incidents'
                 AND column_name = 'created_at' AND data_type = 'timestamp without time zone') THEN
        ALTER TABLE incidents ALTER COLUMN created_at TYPE timestamptz USING created_at AT TIME ZONE 'UTC';
    END IF;

    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'incidents'
                 AND column_name = 'updated_at' AND is_nullable = 'YES') THEN
        UPDATE incidents SET created_at = now() WHERE created_at IS NULL;
        UPDATE incidents SET description = '' WHERE description IS NULL;
        UPDATE incidents SET status = 'open' WHERE status IS NULL;
        UPDATE incidents SET updated_at = created_at WHERE updated_at IS NULL;
        ALTER TABLE incidents
            ALTER COLUMN title SET NOT NULL,
            ALTER COLUMN severity SET NOT NULL,
            ALTER COLUMN created_at SET NOT NULL,
            ALTER COLUMN created_at SET DEFAULT now(),
            ALTER COLUMN description SET NOT NULL,
            ALTER COLUMN description SET DEFAULT '',
            ALTER COLUMN status SET NOT NULL,
            ALTER COLUMN status SET DEFAULT 'open',
            ALTER COLUMN updated_at SET NOT NULL,
            ALTER COLUMN updated_at SET DEFAULT now();
    END IF;

    -- NOT VALID: rows the original wrote are kept as they are, new rows are
    -- checked. A changed rule gets a new constraint name.
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'incidents'::regclass AND conname = 'incidents_severity_valid') THEN
        ALTER TABLE incidents ADD CONSTRAINT incidents_severity_valid
            CHECK (severity IN ('low', 'medium', 'high', 'critical')) NOT VALID;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'incidents'::regclass AND conname = 'incidents_status_valid') THEN
        ALTER TABLE incidents ADD CONSTRAINT incidents_status_valid
            CHECK (status IN ('open', 'resolved')) NOT VALID;
    END IF;
END
$$;

-- Usernames are unique regardless of case: Alice and alice are one person.
CREATE UNIQUE INDEX IF NOT EXISTS users_username_lower_key ON users (lower(username));

-- The list is newest first by id, optionally filtered by status or severity.
CREATE INDEX IF NOT EXISTS incidents_status_id_idx ON incidents (status, id);
CREATE INDEX IF NOT EXISTS incidents_severity_id_idx ON incidents (severity, id);

-- Every change to an incident appends one event in the same transaction: the
-- incident's timeline and, by id, the real-time stream's sequence.
CREATE TABLE IF NOT EXISTS incident_events (
    id          bigserial PRIMARY KEY,
    incident_id integer NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    type        text NOT NULL,
    actor_id    integer REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    data        jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS incident_events_incident_idx ON incident_events (incident_id, id);

-- The real-time stream: every appended event notifies listeners with its id
-- (never the row: payloads are capped at 8000 bytes). NOTIFY is delivered at
-- commit, so rolled-back events notify no one.
CREATE OR REPLACE FUNCTION incident_events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('incident_events', NEW.id::text);
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER incident_events_notify
    AFTER INSERT ON incident_events
    FOR EACH ROW EXECUTE FUNCTION incident_events_notify();
