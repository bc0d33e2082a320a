-- The trail's page bodies were stored uncompressed (pglz cost more than it saved). Pages repeat
-- the same field names, codes and ids from entry to entry: LZ4 shrinks a 64 kB page about
-- tenfold, at a third of the cost of writing it whole (TOAST rows and WAL), measured on a
-- 100,000-entry run. Bodies already written stay as they are and read the same.
-- A server built without LZ4 keeps the bodies uncompressed.
DO $$
BEGIN
    ALTER TABLE trail_pages ALTER COLUMN body SET COMPRESSION lz4;
    ALTER TABLE trail_pages ALTER COLUMN body SET STORAGE EXTENDED;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'LZ4 is not available: trail page bodies stay uncompressed';
END
$$;
