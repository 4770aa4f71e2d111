-- 0043 device_credentials: each device's own MQTT credential, stored only as a hash the broker
-- verifies itself (issue 13). The username is the device's serial, so the broker's ACL pattern
-- rules on %u scope a device to its own topics. At most one live (unrevoked) credential per
-- device: rotation replaces the hash in place (rotated_at), revocation sets revoked_at and
-- keeps the row as history (the app role has no DELETE).
--
-- The hash is mosquitto's `$7$` PBKDF2-HMAC-SHA512 form, composed in password_hash; its parts
-- are also kept in their own columns (iterations, salt as printable characters used as the
-- salt bytes, digest in base64) so that a clustered broker's own database authentication
-- (EMQX PostgreSQL authn, pbkdf2 sha512) can read the same rows without a sync step.

CREATE TABLE device_credentials (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL,
    device_id uuid NOT NULL,
    username text NOT NULL,
    password_hash text NOT NULL CHECK (password_hash LIKE '$7$%'),
    hash_iterations integer NOT NULL CHECK (hash_iterations > 0),
    hash_salt text NOT NULL CHECK (hash_salt ~ '^[A-Za-z0-9+/]{8,64}$'),
    hash_digest text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by uuid REFERENCES users (id) ON DELETE SET NULL,
    rotated_at timestamptz,
    revoked_at timestamptz,
    revoked_by uuid REFERENCES users (id) ON DELETE SET NULL,
    FOREIGN KEY (device_id, client_id) REFERENCES devices (id, client_id) ON DELETE CASCADE
);
-- One live credential per device, and one live entry per broker username.
CREATE UNIQUE INDEX device_credentials_live_device_key
    ON device_credentials (device_id) WHERE revoked_at IS NULL;
CREATE UNIQUE INDEX device_credentials_live_username_key
    ON device_credentials (username) WHERE revoked_at IS NULL;
CREATE INDEX device_credentials_client_idx ON device_credentials (client_id, device_id);
SELECT lifebox_enable_tenant_rls('device_credentials');

INSERT INTO runtime_grants (grantee, privileges, relation, columns, why) VALUES
    ('lifebox_app', 'SELECT, INSERT, UPDATE', 'device_credentials',
     NULL, 'created, rotated and revoked by the API; never deleted (revocation keeps history)');
SELECT lifebox_apply_grants();
