-- 0080 device certificates (issue 13): a device credential is a password (the `$7$` hash the
-- broker verifies) or an X.509 client certificate signed by the device CA, whose subject CN is
-- the device's serial. The certificate itself is public; the row keeps what the broker's
-- revocation list and an operator need: its serial number (hex), SHA-256 fingerprint and
-- expiry. The device keeps its private key: LifeBox never sees it.

ALTER TABLE device_credentials
    ADD COLUMN kind text NOT NULL DEFAULT 'password' CHECK (kind IN ('password', 'certificate')),
    ADD COLUMN certificate_serial text CHECK (certificate_serial ~ '^[0-9a-f]{1,40}$'),
    ADD COLUMN certificate_fingerprint text CHECK (certificate_fingerprint ~ '^[0-9a-f]{64}$'),
    ADD COLUMN certificate_not_after timestamptz,
    ALTER COLUMN password_hash DROP NOT NULL,
    ALTER COLUMN hash_iterations DROP NOT NULL,
    ALTER COLUMN hash_salt DROP NOT NULL,
    ALTER COLUMN hash_digest DROP NOT NULL;

-- Each kind has exactly its own parts.
ALTER TABLE device_credentials ADD CONSTRAINT device_credentials_kind_parts CHECK (
    CASE kind
        WHEN 'password' THEN
            num_nonnulls(password_hash, hash_iterations, hash_salt, hash_digest) = 4
            AND num_nonnulls(certificate_serial, certificate_fingerprint, certificate_not_after) = 0
        ELSE
            num_nonnulls(password_hash, hash_iterations, hash_salt, hash_digest) = 0
            AND num_nonnulls(certificate_serial, certificate_fingerprint, certificate_not_after) = 3
    END
);
CREATE UNIQUE INDEX device_credentials_certificate_serial_key
    ON device_credentials (certificate_serial) WHERE certificate_serial IS NOT NULL;
