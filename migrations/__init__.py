"""Alembic migrations, one script directory per database (authdb, apidb, admindb)."""
