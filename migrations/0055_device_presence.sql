-- 0055 device presence (issue 13): whether a device is connected, as users can trust it.
--
-- device_presence holds one row per device that has ever published its status topic
-- (lifebox/v1/{serial}/status): online, offline or stale, the connection's session number,
-- last connect and disconnect, and the cause of the last change. device_connections records
-- every change (time, state, session, cause, source), newest last; live streams follow it
-- through NOTIFY lifebox_presence, sent by the same transaction (so only once it commits).
--
-- The ordering rule lives in one place, lifebox_presence_apply(): an event older than the
-- state (a lower session, or the same session's online once that session is offline or
-- stale) never changes it. Several ingest workers, redeliveries, a retained status read
-- again after a restart and a replayed old Last Will therefore cannot flip a device back.
-- Everything that moves presence goes through it: the status topic (ingest), the retained
-- statuses (read after a restart), the sweeper (online but silent past three expected
-- intervals: stale), a reading from a stale device (online again, trigger on last_seen_at)
-- and revocation (a credential revoked, the device disabled or decommissioned, its client
-- suspended: offline, cause revoked; triggers).
--
-- A device that never published a status has no row; its Device.online keeps the old rule
-- (seen within three expected intervals).

CREATE TABLE device_presence (
    device_id uuid PRIMARY KEY,
    client_id uuid NOT NULL,
    state text NOT NULL CHECK (state IN ('online', 'offline', 'stale')),
    -- The device's connection counter (boot and connect counter, or connect time in ms).
    session bigint NOT NULL CHECK (session >= 0),
    -- connect: its online status; clean: it said offline before disconnecting; keepalive:
    -- its Last Will (the broker lost it: keepalive expired or the network failed); kicked:
    -- a newer session came online while this one never said offline (session takeover);
    -- revoked: credential revoked, device disabled or client suspended; silent: online but
    -- nothing for three expected intervals (stale); reading: a stale device sent a reading.
    cause text NOT NULL
        CHECK (cause IN ('connect', 'clean', 'keepalive', 'kicked', 'revoked', 'silent',
                         'reading')),
    last_connect_at timestamptz,
    last_disconnect_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (device_id, client_id) REFERENCES devices (id, client_id) ON DELETE CASCADE
);
CREATE INDEX device_presence_client_state_idx ON device_presence (client_id, state);
-- The sweeper looks at online devices only.
CREATE INDEX device_presence_online_idx ON device_presence (device_id) WHERE state = 'online';
SELECT lifebox_enable_tenant_rls('device_presence');

CREATE TABLE device_connections (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_id uuid NOT NULL,
    device_id uuid NOT NULL,
    -- When LifeBox observed the change (receipt of the status, the sweep, the revocation).
    time timestamptz NOT NULL,
    state text NOT NULL CHECK (state IN ('online', 'offline', 'stale')),
    session bigint NOT NULL CHECK (session >= 0),
    cause text NOT NULL
        CHECK (cause IN ('connect', 'clean', 'keepalive', 'kicked', 'revoked', 'silent',
                         'reading')),
    -- What told us: status (the ingest path), retained (statuses read after a restart),
    -- sweeper, reading, revocation.
    source text NOT NULL
        CHECK (source IN ('status', 'retained', 'sweeper', 'reading', 'revocation')),
    FOREIGN KEY (device_id, client_id) REFERENCES devices (id, client_id) ON DELETE CASCADE
);
CREATE INDEX device_connections_device_idx ON device_connections (device_id, id DESC);
CREATE INDEX device_connections_client_idx ON device_connections (client_id, id);
SELECT lifebox_enable_tenant_rls('device_connections');

-- Apply one presence event; true when it changed the state (and a history row was written).
-- p_session NULL means the device's current session (revocation, a reading). The row is
-- locked first, so concurrent events of one device are decided one after the other.
CREATE FUNCTION lifebox_presence_apply(
    p_client uuid, p_device uuid, p_state text, p_session bigint, p_cause text,
    p_at timestamptz, p_source text
) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
DECLARE
    v device_presence;
    v_applies boolean;
BEGIN
    SELECT * INTO v FROM device_presence WHERE device_id = p_device FOR UPDATE;
    IF NOT FOUND THEN
        -- Only the device's own status starts its presence.
        IF p_session IS NULL OR p_source NOT IN ('status', 'retained') THEN
            RETURN false;
        END IF;
        INSERT INTO device_presence (device_id, client_id, state, session, cause,
                                     last_connect_at, last_disconnect_at, updated_at)
        VALUES (p_device, p_client, p_state, p_session, p_cause,
                CASE WHEN p_state = 'online' THEN p_at END,
                CASE WHEN p_state = 'offline' THEN p_at END, p_at)
        ON CONFLICT (device_id) DO NOTHING;
        IF FOUND THEN
            PERFORM lifebox_presence_record(p_client, p_device, p_at, p_state, p_session,
                                            p_cause, p_source);
            RETURN true;
        END IF;
        -- Another transaction's first event won the insert: decide against it.
        SELECT * INTO v FROM device_presence WHERE device_id = p_device FOR UPDATE;
    END IF;
    p_session := coalesce(p_session, v.session);
    v_applies := CASE
        -- The sweeper: only the session it saw online, still online.
        WHEN p_state = 'stale' THEN v.state = 'online' AND p_session = v.session
        -- A reading revives a stale device (its session goes on), nothing else.
        WHEN p_source = 'reading' THEN v.state = 'stale' AND p_state = 'online'
        WHEN p_session > v.session THEN true
        WHEN p_session < v.session THEN false
        -- The same session: its offline once, never its online again (a redelivery, a
        -- retained copy, or an online arriving after its own Will).
        WHEN p_state = 'offline' THEN v.state <> 'offline'
        ELSE false
    END;
    IF NOT v_applies THEN
        RETURN false;
    END IF;
    IF p_state = 'online' AND p_session > v.session AND v.state <> 'offline' THEN
        -- The older session never said offline and no Will of it came first: the newer
        -- connection took it over.
        PERFORM lifebox_presence_record(p_client, p_device, p_at, 'offline', v.session,
                                        'kicked', p_source);
        v.last_disconnect_at := p_at;
    END IF;
    UPDATE device_presence SET
        state = p_state,
        session = p_session,
        cause = p_cause,
        last_connect_at = CASE WHEN p_state = 'online' AND p_source <> 'reading'
                               THEN p_at ELSE v.last_connect_at END,
        last_disconnect_at = CASE WHEN p_state = 'offline' THEN p_at
                                  ELSE v.last_disconnect_at END,
        updated_at = p_at
    WHERE device_id = p_device;
    PERFORM lifebox_presence_record(p_client, p_device, p_at, p_state, p_session, p_cause,
                                    p_source);
    RETURN true;
END
$$;

-- One history row, announced to live streams when the transaction commits.
CREATE FUNCTION lifebox_presence_record(
    p_client uuid, p_device uuid, p_at timestamptz, p_state text, p_session bigint,
    p_cause text, p_source text
) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_id bigint;
BEGIN
    INSERT INTO device_connections (client_id, device_id, time, state, session, cause, source)
    VALUES (p_client, p_device, p_at, p_state, p_session, p_cause, p_source)
    RETURNING id INTO v_id;
    PERFORM pg_notify('lifebox_presence',
                      json_build_object('id', v_id, 'device_id', p_device,
                                        'client_id', p_client)::text);
END
$$;

-- A reading from a stale device brings it back online (ingest moves last_seen_at forward).
CREATE FUNCTION lifebox_presence_on_reading() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM device_presence WHERE device_id = NEW.id AND state = 'stale') THEN
        PERFORM lifebox_presence_apply(NEW.client_id, NEW.id, 'online', NULL, 'reading',
                                       now(), 'reading');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER devices_presence_reading
    AFTER UPDATE OF last_seen_at ON devices
    FOR EACH ROW WHEN (NEW.last_seen_at IS DISTINCT FROM OLD.last_seen_at)
    EXECUTE FUNCTION lifebox_presence_on_reading();

-- Revocation: the device may no longer be connected, whatever it last said.
CREATE FUNCTION lifebox_presence_on_revocation() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_TABLE_NAME = 'clients' THEN
        PERFORM lifebox_presence_apply(p.client_id, p.device_id, 'offline', NULL, 'revoked',
                                       now(), 'revocation')
        FROM device_presence p
        WHERE p.client_id = NEW.id AND p.state <> 'offline'
        ORDER BY p.device_id;
    ELSIF TG_TABLE_NAME = 'devices' THEN
        PERFORM lifebox_presence_apply(NEW.client_id, NEW.id, 'offline', NULL, 'revoked',
                                       now(), 'revocation');
    ELSE
        PERFORM lifebox_presence_apply(NEW.client_id, NEW.device_id, 'offline', NULL,
                                       'revoked', now(), 'revocation');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER devices_presence_revoked
    AFTER UPDATE OF status ON devices
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
                       AND NEW.status IN ('disabled', 'decommissioned'))
    EXECUTE FUNCTION lifebox_presence_on_revocation();

CREATE TRIGGER clients_presence_revoked
    AFTER UPDATE OF status ON clients
    FOR EACH ROW WHEN (OLD.status = 'active' AND NEW.status <> 'active')
    EXECUTE FUNCTION lifebox_presence_on_revocation();

CREATE TRIGGER device_credentials_presence_revoked
    AFTER UPDATE OF revoked_at ON device_credentials
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION lifebox_presence_on_revocation();

INSERT INTO runtime_grants (grantee, privileges, relation, columns, why) VALUES
    ('lifebox_app', 'SELECT, INSERT, UPDATE', 'device_presence',
     NULL, 'read by the API; moved by the revocation triggers (credential, device, client)'),
    ('lifebox_app', 'SELECT, INSERT', 'device_connections',
     NULL, 'history read by the API, appended by the revocation triggers; never changed'),
    ('lifebox_ingest', 'SELECT, INSERT, UPDATE', 'device_presence',
     NULL, 'statuses, the sweeper and readings move presence (lifebox_presence_apply)'),
    ('lifebox_ingest', 'INSERT', 'device_connections', NULL, 'every presence change'),
    ('lifebox_ingest', 'SELECT', 'device_connections', '{id}',
     'INSERT … RETURNING id, for the NOTIFY live streams follow');
-- The sweeper (in ingest workers) compares silence with each device's expected interval.
UPDATE runtime_grants SET columns = columns || '{expected_interval_s}'::text[]
WHERE grantee = 'lifebox_ingest' AND privileges = 'SELECT' AND relation = 'devices'
  AND NOT columns @> '{expected_interval_s}';
SELECT lifebox_apply_grants();
