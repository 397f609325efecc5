BEGIN;

-- Running downgrade ghostsync_0009 -> ghostsync_0008

UPDATE alembic_version SET version_num='ghostsync_0008' WHERE alembic_version.version_num = 'ghostsync_0009';

COMMIT;

