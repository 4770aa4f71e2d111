-- 0081 what the broker's mutual-TLS listener is made of (issue 13), on 0046's one rule of
-- which credentials a broker accepts:
-- - broker_device_credentials also says each credential's kind and, for a certificate, its
--   serial number and expiry: the admitted certificates are its certificate rows;
-- - broker_refused_certificates lists every unexpired certificate the broker must refuse at
--   the TLS handshake (the revocation list): revoked for good, or on hold while its device
--   is not provisioned/active or its client not active (the entry leaves the list when they
--   are active again).
-- `lifebox broker-sync` reads both, and nothing else of certificates.

CREATE OR REPLACE VIEW broker_device_credentials WITH (security_barrier) AS
SELECT c.username, c.device_id, c.client_id, c.password_hash, c.hash_iterations, c.hash_salt,
       c.hash_digest, c.kind, c.certificate_serial, c.certificate_not_after
FROM device_credentials c
JOIN devices d ON d.id = c.device_id AND d.client_id = c.client_id
JOIN clients k ON k.id = c.client_id
WHERE c.revoked_at IS NULL AND d.status IN ('provisioned', 'active') AND k.status = 'active';

CREATE VIEW broker_refused_certificates WITH (security_barrier) AS
SELECT c.certificate_serial,
       c.revoked_at IS NOT NULL AS revoked,
       COALESCE(c.revoked_at, greatest(d.updated_at, k.updated_at)) AS since
FROM device_credentials c
JOIN devices d ON d.id = c.device_id AND d.client_id = c.client_id
JOIN clients k ON k.id = c.client_id
WHERE c.kind = 'certificate' AND c.certificate_not_after > now()
  AND NOT EXISTS (SELECT 1 FROM broker_device_credentials b
                  WHERE b.certificate_serial = c.certificate_serial);
COMMENT ON VIEW broker_refused_certificates IS
    'Unexpired device certificates the broker refuses: revoked, or on hold (device or client not active).';

UPDATE runtime_grants SET columns = '{username,password_hash,kind,certificate_not_after}',
    why = 'the broker''s password file and mutual-TLS ACL: the live credentials (0046''s one '
          'rule), their hashes and, for certificates, their expiry'
WHERE grantee = 'lifebox_broker_sync' AND relation = 'broker_device_credentials';
INSERT INTO runtime_grants (grantee, privileges, relation, columns, why) VALUES
    ('lifebox_broker_sync', 'SELECT', 'broker_refused_certificates',
     '{certificate_serial,revoked,since}',
     'the broker''s certificate revocation list');
SELECT lifebox_apply_grants();
