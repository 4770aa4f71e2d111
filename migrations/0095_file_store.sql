-- 0095 files (issue 17): what FileService needs on top of 0008's files table.
--
-- * A file may be attached to a quick-view page (access_level 'shared': the page's shares
--   apply). The file outlives its page: unlinked, it is seen as a private file.
-- * A file records which store keeps its bytes, so changing LIFEBOX_FILES_STORE later
--   leaves earlier files readable.
-- * file_chunks: the default store's bytes, in PostgreSQL, so every serve replica sees them
--   and backups include them. Rows are keyed by the file's storage key and the offset of
--   their first byte (a range read starts at the right row). The foreign key is deferred:
--   an upload writes its chunks before its files row (size and digest are known only at
--   the end), all in one transaction, so an aborted upload leaves neither. Deleting the
--   file deletes its chunks.
-- * client_file_usage: bytes used per tenant, kept by a trigger on files (so every way a
--   file goes is counted), and an optional per-tenant quota (NULL: the server's default).
--   An upload locks its tenant's row before inserting, so concurrent uploads cannot
--   together exceed the quota.

ALTER TABLE files
    ADD COLUMN page_id uuid,
    ADD COLUMN store text NOT NULL DEFAULT 'postgres' CHECK (store IN ('postgres', 'local')),
    ADD CONSTRAINT files_page_fkey FOREIGN KEY (page_id, client_id)
        REFERENCES quick_view_pages (id, client_id) ON DELETE SET NULL (page_id);
CREATE INDEX files_page_idx ON files (page_id);

CREATE TABLE file_chunks (
    client_id uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    storage_key text NOT NULL REFERENCES files (storage_key) ON DELETE CASCADE
        DEFERRABLE INITIALLY DEFERRED,
    start_byte bigint NOT NULL CHECK (start_byte >= 0),
    data bytea NOT NULL CHECK (octet_length(data) > 0),
    PRIMARY KEY (storage_key, start_byte)
);
CREATE INDEX file_chunks_client_idx ON file_chunks (client_id);
SELECT lifebox_enable_tenant_rls('file_chunks');

CREATE TABLE client_file_usage (
    client_id uuid PRIMARY KEY REFERENCES clients (id) ON DELETE CASCADE,
    used_bytes bigint NOT NULL DEFAULT 0 CHECK (used_bytes >= 0),
    quota_bytes bigint CHECK (quota_bytes >= 0)
);
SELECT lifebox_enable_tenant_rls('client_file_usage');

CREATE FUNCTION lifebox_count_file_bytes() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO client_file_usage AS u (client_id, used_bytes)
            VALUES (NEW.client_id, NEW.size_bytes)
            ON CONFLICT (client_id) DO UPDATE SET used_bytes = u.used_bytes + NEW.size_bytes;
        RETURN NEW;
    END IF;
    UPDATE client_file_usage SET used_bytes = greatest(used_bytes - OLD.size_bytes, 0)
        WHERE client_id = OLD.client_id;
    RETURN OLD;
END
$$;
CREATE TRIGGER count_file_bytes AFTER INSERT OR DELETE ON files
    FOR EACH ROW EXECUTE FUNCTION lifebox_count_file_bytes();

-- Existing files are counted.
INSERT INTO client_file_usage (client_id, used_bytes)
    SELECT client_id, sum(size_bytes) FROM files GROUP BY client_id;

INSERT INTO runtime_grants (grantee, privileges, relation, columns, why) VALUES
    ('lifebox_app', 'SELECT, INSERT, DELETE', 'file_chunks', NULL,
     'FileService keeps file bytes here (default store); chunks are never updated'),
    ('lifebox_app', 'SELECT, INSERT, UPDATE', 'client_file_usage', NULL,
     'the files trigger counts bytes as the inserting role; uploads lock the row');
SELECT lifebox_apply_grants();
