-- 0097 calculated metrics (issue 17): a formula's scope and version, and the version each
-- data point was computed with. calculation_formulas (0008) stays the one table of formulas.
--
-- A formula is a CEL expression over one reading's fields (checked by the native code that
-- evaluates it in ingest), its `name` is the metric its points carry and `unit` their unit.
-- It applies to one device (device_id), the devices of a type (device_type) or, with
-- neither, every device of its tenant.
--
-- `version` starts at 1 and is bumped by the database on every update, whatever the writer:
-- ingest caches compiled formulas by (id, version), and each data point records the version
-- that computed it, so a formula edited while readings flow shows which points used which.

ALTER TABLE calculation_formulas
    ADD COLUMN device_id uuid,
    ADD COLUMN device_type text
        CHECK (device_type IS NULL OR length(device_type) BETWEEN 1 AND 100),
    ADD COLUMN version bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    ADD CONSTRAINT calculation_formulas_one_target CHECK (num_nonnulls(device_id, device_type) <= 1),
    ADD CONSTRAINT calculation_formulas_expression_length CHECK (length(expression) <= 1000),
    ADD CONSTRAINT calculation_formulas_unit_length CHECK (unit IS NULL OR length(unit) <= 32),
    -- A device's formulas go with it.
    ADD CONSTRAINT calculation_formulas_device_fkey FOREIGN KEY (device_id, client_id)
        REFERENCES devices (id, client_id) ON DELETE CASCADE;
-- Ingest reads the enabled formulas of the tenants in a batch.
CREATE INDEX calculation_formulas_enabled_idx ON calculation_formulas (client_id) WHERE enabled;
CREATE INDEX calculation_formulas_device_idx ON calculation_formulas (device_id);

CREATE FUNCTION lifebox_bump_formula_version() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
    BEGIN
        NEW.version := OLD.version + 1;
        RETURN NEW;
    END
    $$;
CREATE TRIGGER bump_version BEFORE UPDATE ON calculation_formulas
    FOR EACH ROW EXECUTE FUNCTION lifebox_bump_formula_version();

-- The version of the formula that computed the point (NULL for points written otherwise).
ALTER TABLE device_data_points
    ADD COLUMN formula_version bigint CHECK (formula_version IS NULL OR formula_version >= 1);

-- Ingest computes the points: it reads enabled formulas and writes their points (COPY, and
-- ON CONFLICT (device_id, metric, time) DO NOTHING on a redelivery, which reads the target).
INSERT INTO runtime_grants (grantee, privileges, relation, columns, why) VALUES
    ('lifebox_ingest', 'SELECT', 'calculation_formulas',
     '{id,client_id,name,expression,unit,enabled,device_id,device_type,version}',
     'formulas to evaluate on each batch (0097)'),
    ('lifebox_ingest', 'INSERT', 'device_data_points', '{*}',
     'COPY the calculated points with their readings (0097)'),
    ('lifebox_ingest', 'SELECT', 'device_data_points', '{device_id,metric,time}',
     'ON CONFLICT (device_id, metric, time) DO NOTHING reads the conflict target (0097)');
SELECT lifebox_apply_grants();
