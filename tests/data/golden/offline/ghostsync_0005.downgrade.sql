BEGIN;

-- Running downgrade ghostsync_0005 -> ghostsync_0004

UPDATE alembic_version SET version_num='ghostsync_0004' WHERE alembic_version.version_num = 'ghostsync_0005';

COMMIT;

