BEGIN;

-- Running downgrade ghostsync_0001 -> 

DELETE FROM alembic_version WHERE alembic_version.version_num = 'ghostsync_0001';

COMMIT;

