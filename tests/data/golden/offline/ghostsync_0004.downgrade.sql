BEGIN;

-- Running downgrade ghostsync_0004 -> ghostsync_0003

UPDATE alembic_version SET version_num='ghostsync_0003' WHERE alembic_version.version_num = 'ghostsync_0004';

COMMIT;

