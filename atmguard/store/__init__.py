"""The case store: one SQL database (SQLite by default, PostgreSQL by config) with Alembic migrations."""
