-- A page-view id serves only the consent update within the hour after the view, so it lives in
-- a table of its own that the hourly purge empties of older ids, and visit rows no longer carry
-- it (clearing it in place rewrote every visit row). Ids already in visit rows stay there,
-- unread, until their visits expire: rewriting 30 days of rows at upgrade would cost more.
CREATE TABLE page_views (
    view_id     TEXT    NOT NULL,
    visit_id    INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (view_id, visit_id)
) WITHOUT ROWID;
INSERT INTO page_views (view_id, visit_id, received_at)
    SELECT view_id, id, received_at FROM collect_logs
    WHERE view_id IS NOT NULL
      AND received_at >= (SELECT max(received_at) FROM collect_logs) - 3600;
DROP INDEX collect_logs_view;
