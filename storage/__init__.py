"""The database and cache behind core's ports: ``database.SqlStore``, ``cache.open_cache``, ``migrate``."""
