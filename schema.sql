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

-- The lifecycle: acknowledgement, deduplication, labels, and a version for
-- optimistic concurrency (the ETag).
ALTER TABLE incidents
    ADD COLUMN IF NOT EXISTS acknowledged_at timestamptz,
    ADD COLUMN IF NOT EXISTS acknowledged_by integer REFERENCES users (id) ON DELETE SET NULL,
    ADD COLUMN IF NOT EXISTS dedup_key text,
    ADD COLUMN IF NOT EXISTS occurrences integer NOT NULL DEFAULT 1,
    ADD COLUMN IF NOT EXISTS last_occurred_at timestamptz,
    ADD COLUMN IF NOT EXISTS labels jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN IF NOT EXISTS version integer NOT NULL DEFAULT 1;

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
        UPDATE incidents SET last_occurred_at = created_at WHERE last_occurred_at IS NULL;
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
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'incidents'
                 AND column_name = 'last_occurred_at' AND is_nullable = 'YES') THEN
        UPDATE incidents SET last_occurred_at = created_at WHERE last_occurred_at IS NULL;
        ALTER TABLE incidents
            ALTER COLUMN last_occurred_at SET NOT NULL,
            ALTER COLUMN last_occurred_at SET DEFAULT now();
    END IF;

    -- NOT VALID: rows the original wrote are kept as they are, new rows are
    -- checked. A changed rule gets a new constraint name.
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'incidents'::regclass AND conname = 'incidents_severity_valid') THEN
        ALTER TABLE incidents ADD CONSTRAINT incidents_severity_valid
            CHECK (severity IN ('low', 'medium', 'high', 'critical')) NOT VALID;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'incidents'::regclass AND conname = 'incidents_status_valid_v2') THEN
        ALTER TABLE incidents DROP CONSTRAINT IF EXISTS incidents_status_valid;
        ALTER TABLE incidents ADD CONSTRAINT incidents_status_valid_v2
            CHECK (status IN ('open', 'acknowledged', 'resolved')) NOT VALID;
    END IF;
END
$$;

-- Usernames are unique regardless of case: Alice and alice are one person.
CREATE UNIQUE INDEX IF NOT EXISTS users_username_lower_key ON users (lower(username));

-- Severities sort by weight, not by name.
CREATE OR REPLACE FUNCTION severity_rank(severity text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN
    CASE severity WHEN 'low' THEN 1 WHEN 'medium' THEN 2 WHEN 'high' THEN 3 WHEN 'critical' THEN 4 ELSE 0 END;

-- The list: newest first by id by default, filtered by status or severity;
-- the other sorts page by (key, id).
CREATE INDEX IF NOT EXISTS incidents_status_id_idx ON incidents (status, id);
CREATE INDEX IF NOT EXISTS incidents_severity_id_idx ON incidents (severity, id);
CREATE INDEX IF NOT EXISTS incidents_created_at_idx ON incidents (created_at, id);
CREATE INDEX IF NOT EXISTS incidents_updated_at_idx ON incidents (updated_at, id);
CREATE INDEX IF NOT EXISTS incidents_severity_rank_idx ON incidents (severity_rank(severity), id);
CREATE INDEX IF NOT EXISTS incidents_labels_idx ON incidents USING gin (labels jsonb_path_ops);
-- /metrics counts unresolved incidents on every scrape: from this index
-- alone, whatever the number of resolved ones.
CREATE INDEX IF NOT EXISTS incidents_unresolved_idx ON incidents (status, severity) WHERE status <> 'resolved';


-- Title search (q=) uses trigrams where the pg_trgm extension can be had; a
-- role that may not create it gets a sequential scan instead.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'pg_trgm unavailable (%); title search scans the table', SQLERRM;
END
$$;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX IF NOT EXISTS incidents_title_trgm_idx ON incidents USING gin (title gin_trgm_ops);
    END IF;
END
$$;

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

-- Notes responders leave on an incident; a transition may carry one.
CREATE TABLE IF NOT EXISTS incident_notes (
    id          bigserial PRIMARY KEY,
    incident_id integer NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    body        text NOT NULL,
    author_id   integer REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS incident_notes_incident_idx ON incident_notes (incident_id, id);
ALTER TABLE incident_events ADD COLUMN IF NOT EXISTS note_id bigint REFERENCES incident_notes (id) ON DELETE SET NULL;

-- An event's id is taken only by a transaction that already has a
-- transaction id: the stream's feed decides that a missing id will never
-- commit once every transaction older than a snapshot taken after it has
-- ended (feed.go), which holds only if the id's holder was among them.
CREATE OR REPLACE FUNCTION next_event_id() RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    SELECT CASE WHEN pg_current_xact_id() IS NOT NULL THEN nextval('incident_events_id_seq') END
$$;
ALTER TABLE incident_events ALTER COLUMN id SET DEFAULT next_event_id();

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

-- Access control. Roles: admin manages users and reads the audit log,
-- responder also acts on incidents, viewer only reads. token_version is in
-- every JWT; bumping it (a password change) ends the tokens issued before.
ALTER TABLE users
    ADD COLUMN IF NOT EXISTS role text NOT NULL DEFAULT 'responder',
    ADD COLUMN IF NOT EXISTS disabled boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS token_version integer NOT NULL DEFAULT 0;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'users_role_valid') THEN
        ALTER TABLE users ADD CONSTRAINT users_role_valid CHECK (role IN ('admin', 'responder', 'viewer'));
    END IF;
END
$$;
-- A database from before roles has users but no admin: its first user
-- becomes one, as on a fresh install.
UPDATE users SET role = 'admin'
WHERE id = (SELECT min(id) FROM users)
  AND NOT EXISTS (SELECT 1 FROM users WHERE role = 'admin');

-- API keys for scripts and bots. Only a SHA-256 of the key is kept.
CREATE TABLE IF NOT EXISTS api_keys (
    id           bigserial PRIMARY KEY,
    user_id      integer NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL,
    key_hash     bytea NOT NULL UNIQUE,
    scopes       text[] NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX IF NOT EXISTS api_keys_user_idx ON api_keys (user_id, id);
ALTER TABLE incident_events ADD COLUMN IF NOT EXISTS api_key_id bigint REFERENCES api_keys (id) ON DELETE SET NULL;

-- Single-use tickets that let a browser open the stream without putting a
-- token in the URL. Hashed like keys; a used or expired one is deleted.
CREATE TABLE IF NOT EXISTS stream_tickets (
    ticket_hash bytea PRIMARY KEY,
    user_id     integer NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    api_key_id  bigint REFERENCES api_keys (id) ON DELETE CASCADE,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS stream_tickets_expires_idx ON stream_tickets (expires_at);

-- Who did what, for security-relevant actions.
CREATE TABLE IF NOT EXISTS audit_log (
    id       bigserial PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    actor_id integer REFERENCES users (id) ON DELETE SET NULL,
    action   text NOT NULL,
    target   text,
    ip       text,
    details  jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_log_actor_idx ON audit_log (actor_id, id);
CREATE INDEX IF NOT EXISTS audit_log_action_idx ON audit_log (action, id);

-- Integrations: monitoring tools that report through a hook of their own
-- format (Alertmanager, Grafana, PagerDuty Events v2, generic), each with a
-- key kept as a SHA-256 like API keys.
CREATE TABLE IF NOT EXISTS integrations (
    id               bigserial PRIMARY KEY,
    name             text NOT NULL,
    type             text NOT NULL CHECK (type IN ('alertmanager', 'grafana', 'pagerduty', 'generic')),
    default_severity text NOT NULL CHECK (default_severity IN ('low', 'medium', 'high', 'critical')),
    labels           jsonb NOT NULL DEFAULT '{}',
    group_by         text NOT NULL DEFAULT 'alert' CHECK (group_by IN ('alert', 'group')),
    hmac_secret      text,
    timestamp_header text,
    key_hash         bytea NOT NULL UNIQUE,
    enabled          boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS integrations_name_key ON integrations (lower(name));

-- Where an incident came from, and what its sender said beyond the title.
-- dedup_scope is the integration whose keys dedup_key belongs to (0: the
-- REST API's), so two integrations may use one key without merging; it is
-- kept when the integration is deleted. alert_started_at is an alert's
-- startsAt: a re-sent alert with the same one is not a new occurrence.
ALTER TABLE incidents
    ADD COLUMN IF NOT EXISTS source text NOT NULL DEFAULT 'api',
    ADD COLUMN IF NOT EXISTS integration_id bigint REFERENCES integrations (id) ON DELETE SET NULL,
    ADD COLUMN IF NOT EXISTS dedup_scope bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS links jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN IF NOT EXISTS details jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN IF NOT EXISTS alert_started_at timestamptz;
ALTER TABLE incident_events ADD COLUMN IF NOT EXISTS integration_id bigint REFERENCES integrations (id) ON DELETE SET NULL;
-- Deleting an integration sets these to NULL: without an index, a scan of
-- both tables.
CREATE INDEX IF NOT EXISTS incidents_integration_idx ON incidents (integration_id) WHERE integration_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS incident_events_integration_idx ON incident_events (integration_id) WHERE integration_id IS NOT NULL;

-- At most one unresolved incident per dedup_key and scope: concurrent
-- reports with one key meet in INSERT ... ON CONFLICT on this index. A
-- report that flaps finds the incident resolved a moment ago on the second.
-- They replace indexes on dedup_key alone.
CREATE UNIQUE INDEX IF NOT EXISTS incidents_scoped_dedup_unresolved ON incidents (dedup_scope, dedup_key)
    WHERE dedup_key IS NOT NULL AND status <> 'resolved';
CREATE INDEX IF NOT EXISTS incidents_scoped_dedup_resolved ON incidents (dedup_scope, dedup_key, resolved_at)
    WHERE dedup_key IS NOT NULL AND status = 'resolved';
DROP INDEX IF EXISTS incidents_dedup_key_unresolved;
DROP INDEX IF EXISTS incidents_dedup_key_resolved;

-- Heartbeats (dead man's switches): a job pings its secret URL; a ping
-- overdue by interval + grace opens one incident, on whichever replica
-- notices first, and the next ping resolves it. The deadline lives here,
-- so restarts lose nothing.
CREATE TABLE IF NOT EXISTS heartbeats (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL,
    interval_s   bigint NOT NULL CHECK (interval_s BETWEEN 30 AND 31536000),
    grace_s      bigint NOT NULL CHECK (grace_s BETWEEN 0 AND 31536000),
    severity     text NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    labels       jsonb NOT NULL DEFAULT '{}',
    token_hash   bytea NOT NULL UNIQUE,
    state        text NOT NULL DEFAULT 'new' CHECK (state IN ('new', 'up', 'down', 'paused')),
    last_ping_at timestamptz,
    deadline     timestamptz,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS heartbeats_name_key ON heartbeats (lower(name));
CREATE INDEX IF NOT EXISTS heartbeats_deadline_idx ON heartbeats (deadline) WHERE state = 'up';

-- Outgoing webhooks. Each endpoint keeps a cursor: the last event sequence
-- number it has queued (up to the position the stream's feed has reached,
-- so an event still being committed is never skipped). Each queued event
-- is a delivery; a replica claims the first pending delivery of an
-- endpoint by leasing it, sends without a transaction open, then records
-- the attempt: a replica that dies mid-send leaves a lease that expires,
-- and the delivery goes again with the same webhook-id. The secret is
-- stored, since signing needs it; after a rotation the previous one signs
-- too until previous_until.
CREATE TABLE IF NOT EXISTS webhooks (
    id              bigserial PRIMARY KEY,
    name            text NOT NULL,
    url             text NOT NULL,
    format          text NOT NULL CHECK (format IN ('standard', 'slack', 'ntfy')),
    event_types     jsonb NOT NULL,
    min_severity    text NOT NULL CHECK (min_severity IN ('low', 'medium', 'high', 'critical')),
    labels          jsonb NOT NULL DEFAULT '{}',
    enabled         boolean NOT NULL DEFAULT true,
    disabled_reason text NOT NULL DEFAULT '',
    secret          text NOT NULL,
    previous_secret text,
    previous_until  timestamptz,
    cursor_seq      bigint NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS webhooks_name_key ON webhooks (lower(name));
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id              bigserial PRIMARY KEY,
    webhook_id      bigint NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_seq       bigint NOT NULL,
    event_type      text NOT NULL,
    body            text NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    lease_until     timestamptz,
    response_code   integer,
    error           text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    UNIQUE (webhook_id, event_seq)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_pending_idx ON webhook_deliveries (webhook_id, event_seq) WHERE status = 'pending';

-- Escalation. opened_at is when the incident last became open (created,
-- reopened or unacknowledged): the clock its escalation counts from.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'incidents' AND column_name = 'opened_at') THEN
        ALTER TABLE incidents ADD COLUMN opened_at timestamptz;
        UPDATE incidents i SET opened_at = coalesce((SELECT max(e.created_at) FROM incident_events e
            WHERE e.incident_id = i.id AND e.type IN ('added', 'reopened', 'unacknowledged')), i.created_at);
        ALTER TABLE incidents ALTER COLUMN opened_at SET NOT NULL, ALTER COLUMN opened_at SET DEFAULT now();
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS incidents_open_opened_at_idx ON incidents (opened_at) WHERE status = 'open';

-- What an event carries beyond the incident: the escalation step it
-- notified, or the heartbeat that went down or came back up.
ALTER TABLE incident_events
    ADD COLUMN IF NOT EXISTS escalation jsonb,
    ADD COLUMN IF NOT EXISTS heartbeat jsonb;

-- An escalation policy notifies its steps' webhooks while a matching
-- incident stays open (unacknowledged). steps is the list as the API
-- shows it, delays in seconds: [{"after_s": 600, "webhooks": [1, 2]}].
-- escalation_policy_webhooks repeats the webhooks it names, so that a
-- webhook in use cannot be deleted.
CREATE TABLE IF NOT EXISTS escalation_policies (
    id             bigserial PRIMARY KEY,
    name           text NOT NULL,
    min_severity   text NOT NULL CHECK (min_severity IN ('low', 'medium', 'high', 'critical')),
    labels         jsonb NOT NULL DEFAULT '{}',
    steps          jsonb NOT NULL,
    repeat_every_s bigint NOT NULL DEFAULT 0,
    repeat_times   integer NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS escalation_policies_name_key ON escalation_policies (lower(name));
CREATE TABLE IF NOT EXISTS escalation_policy_webhooks (
    policy_id  bigint NOT NULL REFERENCES escalation_policies (id) ON DELETE CASCADE,
    webhook_id bigint NOT NULL REFERENCES webhooks (id),
    PRIMARY KEY (policy_id, webhook_id)
);
CREATE INDEX IF NOT EXISTS escalation_policy_webhooks_webhook_idx ON escalation_policy_webhooks (webhook_id);

-- How far each incident's escalation under each policy has gone: sent
-- notices (steps, then repeats) since the incident opened at opened_at. A
-- row whose opened_at is not the incident's belongs to an earlier time it
-- was open, and counts as none.
CREATE TABLE IF NOT EXISTS escalation_progress (
    incident_id integer NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    policy_id   bigint NOT NULL REFERENCES escalation_policies (id) ON DELETE CASCADE,
    opened_at   timestamptz NOT NULL,
    sent        integer NOT NULL,
    sent_at     timestamptz NOT NULL,
    PRIMARY KEY (incident_id, policy_id)
);
CREATE INDEX IF NOT EXISTS escalation_progress_policy_idx ON escalation_progress (policy_id);

-- Response times (GET /api/v1/incidents/stats) read the first
-- acknowledgements and the resolutions of a date range, without a scan of
-- every event or incident.
CREATE INDEX IF NOT EXISTS incident_events_acknowledged_idx ON incident_events (created_at) WHERE type = 'acknowledged';
CREATE INDEX IF NOT EXISTS incidents_resolved_at_idx ON incidents (resolved_at) WHERE status = 'resolved';
