from migrations.env_common import run_migrations

run_migrations()
