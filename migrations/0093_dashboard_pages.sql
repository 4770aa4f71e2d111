-- 0093 dashboards (issue 17): what DashboardService needs on top of 0008's tables.
--
-- * Shares may expire: a share whose expires_at has passed grants nothing (it stays as a row
--   until revoked, so the owner sees it lapsed).
-- * Pages, widgets and layouts carry a version counter, bumped by the database on every
--   update; the API's AIP-154 etag is that counter, so two editors cannot silently
--   overwrite each other (a write naming a stale etag is refused with ABORTED).
-- * A user's own arrangement of a page is a dashboard_layouts row for (user, page), unique;
--   it goes with the page. The page's default arrangement stays the page's own (the
--   widgets' position), so there is one source of truth for each.

ALTER TABLE quick_view_page_shares
    ADD COLUMN expires_at timestamptz;

CREATE FUNCTION lifebox_bump_version() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.version := OLD.version + 1;
    RETURN NEW;
END
$$;

ALTER TABLE quick_view_pages ADD COLUMN version bigint NOT NULL DEFAULT 1;
ALTER TABLE widgets ADD COLUMN version bigint NOT NULL DEFAULT 1;
ALTER TABLE dashboard_layouts ADD COLUMN version bigint NOT NULL DEFAULT 1;

CREATE TRIGGER bump_version BEFORE UPDATE ON quick_view_pages
    FOR EACH ROW EXECUTE FUNCTION lifebox_bump_version();
CREATE TRIGGER bump_version BEFORE UPDATE ON widgets
    FOR EACH ROW EXECUTE FUNCTION lifebox_bump_version();
CREATE TRIGGER bump_version BEFORE UPDATE ON dashboard_layouts
    FOR EACH ROW EXECUTE FUNCTION lifebox_bump_version();

-- Per-page layouts: (user, page) is the key; the name-per-user key of 0008 would forbid a
-- user's second page layout, so a page layout's name is free and only page-less (legacy)
-- layouts keep names unique per user.
ALTER TABLE dashboard_layouts
    ADD COLUMN page_id uuid,
    ADD CONSTRAINT dashboard_layouts_page_fkey FOREIGN KEY (page_id, client_id)
        REFERENCES quick_view_pages (id, client_id) ON DELETE CASCADE,
    DROP CONSTRAINT dashboard_layouts_user_id_name_key;
CREATE UNIQUE INDEX dashboard_layouts_user_name_key ON dashboard_layouts (user_id, name)
    WHERE page_id IS NULL;
CREATE UNIQUE INDEX dashboard_layouts_user_page_key ON dashboard_layouts (user_id, page_id)
    WHERE page_id IS NOT NULL;
CREATE INDEX dashboard_layouts_page_idx ON dashboard_layouts (page_id);

-- Reading a user's live shares (page access on every call) by (user, page).
CREATE INDEX quick_view_page_shares_user_page_idx ON quick_view_page_shares (user_id, page_id);
