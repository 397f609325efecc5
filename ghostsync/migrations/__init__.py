"""ghostsync's Alembic chain, shipped inside the package.

- ``alembic.ini``: the packaged configuration (``ghostsync migrate`` uses it);
- ``env.py`` / ``environment``: URL handling, online and offline runs;
- ``versions/``: the revisions, each with its frozen SQL; host projects list
  ``ghostsync:migrations/versions`` in their ``version_locations``;
- ``kit``: the stable contract through which revisions reach the package;
- ``declarations``, ``jobs``, ``settings`` (and ``dberrors``, ``statements``,
  ``own_transaction``, ``register``): what the kit and the revisions need, here so
  that they import nothing of ghostsync outside this package (the runtime may
  import from here, never the other way round; only ``env.py`` / ``environment``
  use the runtime).
"""
