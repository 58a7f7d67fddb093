#!/usr/bin/env bash
# Run the whole system on this machine, supervised by honcho (one coloured, prefixed log
# stream for every process; Ctrl-C or SIGTERM stops them all).
#
#   scripts/run.sh             install (when needed), check services, migrate, apply the
#                              topology, check every Procfile process can start, start them
#   scripts/run.sh --check     only check that every Procfile process can start (exit 1 if
#                              not); installs and touches nothing
#   scripts/run.sh --no-setup  skip install, services, migrations and topology
#   PROCFILE=path              use another Procfile (default: Procfile)
set -euo pipefail
cd "$(dirname "$0")/.."

PROCFILE=${PROCFILE:-Procfile}
check_only=0
setup=1
for arg in "$@"; do
  case "$arg" in
    --check) check_only=1 ;;
    --no-setup) setup=0 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

if [ "$setup" = 1 ] && [ "$check_only" = 0 ]; then
  stale=0
  for f in pyproject.toml scripts/install.sh requirements/*.txt; do
    if [ "$f" -nt .venv/.installed ]; then stale=1; fi
  done
  if [ ! -f .venv/.installed ] || [ "$stale" = 1 ]; then
    bash scripts/install.sh
    touch .venv/.installed
  fi
fi
# The project's virtualenv when there is one, else whatever python is on PATH (a container,
# or a virtualenv the caller activated).
if [ -x .venv/bin/python ]; then
  export VIRTUAL_ENV="$PWD/.venv"
  export PATH="$VIRTUAL_ENV/bin:$PATH"
fi
export PYTHONUNBUFFERED=1
export LOG_FORMAT=${LOG_FORMAT:-console}

if [ "$check_only" = 1 ]; then
  exec python scripts/check_procfile.py "$PROCFILE"
fi

# The auth API refuses to start without the key that encrypts the signing keys in authdb.
# A local run keeps one of its own outside the repository and the database (created once).
if [ -z "${SIGNING_KEY_KEK:-}" ] && [ -z "${SIGNING_KEY_KEK_FILE:-}" ]; then
  kek_file="${XDG_STATE_HOME:-$HOME/.local/state}/ams/signing-kek"
  if [ ! -s "$kek_file" ]; then
    mkdir -p "$(dirname "$kek_file")"
    (umask 077 && python -c 'import secrets; print(secrets.token_urlsafe(32))' > "$kek_file")
    echo "run: created the signing-key encryption key $kek_file (keep it; back it up)"
  fi
  export SIGNING_KEY_KEK_FILE="$kek_file"
fi

# Least privilege: every process connects as its service's own PostgreSQL role, which
# migrate creates as the local superuser (docs/deployment.md, "Database roles"). Passwords
# are made once, outside the repository. Setting any of the URLs yourself turns this off.
migrate_url=${MIGRATE_DATABASE_URL:-}
if [ -z "${AUTH_DATABASE_URL:-}${USERS_DATABASE_URL:-}${ADMIN_DATABASE_URL:-}${AUDIT_DATABASE_URL:-}" ]; then
  state="${XDG_STATE_HOME:-$HOME/.local/state}/ams"
  pg="127.0.0.1:5432"
  for service in auth users admin audit; do
    secret="$state/db-$service-password"
    if [ ! -s "$secret" ]; then
      mkdir -p "$state"
      (umask 077 && python -c 'import secrets; print(secrets.token_urlsafe(24))' > "$secret")
    fi
  done
  export AUTH_DATABASE_URL="postgresql+asyncpg://ams_auth@$pg/authdb"
  export USERS_DATABASE_URL="postgresql+asyncpg://ams_users@$pg/apidb"
  export ADMIN_DATABASE_URL="postgresql+asyncpg://ams_admin@$pg/admindb"
  export AUDIT_DATABASE_URL="postgresql+asyncpg://ams_audit@$pg/authdb"
  export AUTH_DATABASE_PASSWORD_FILE="$state/db-auth-password"
  export USERS_DATABASE_PASSWORD_FILE="$state/db-users-password"
  export ADMIN_DATABASE_PASSWORD_FILE="$state/db-admin-password"
  export AUDIT_DATABASE_PASSWORD_FILE="$state/db-audit-password"
  migrate_url=${migrate_url:-"postgresql+asyncpg://postgres@$pg/postgres"}
fi
# migrate alone gets the administrator's URL (no process started below has it).
unset MIGRATE_DATABASE_URL

if [ "$setup" = 1 ]; then
  bash scripts/services.sh
  echo "run: migrating the databases${migrate_url:+ (and their roles)}"
  MIGRATE_DATABASE_URL="$migrate_url" python -m amsctl db migrate
  echo "run: applying the RabbitMQ topology"
  python -m amsctl topology apply
fi

# OCR uses tesseract unless OCR_ENGINE=easyocr is set (needs `make install-ocr` and the model
# files, docs/ocr.md); say which, so nobody wonders where the text came from.
echo "run: OCR engine ${OCR_ENGINE:-tesseract}"

# Refuse to start half a system: honcho would stop everything as soon as one process exits.
python scripts/check_procfile.py "$PROCFILE"

echo "run: starting $(grep -cE '^[A-Za-z0-9_-]+:' "$PROCFILE") processes (Ctrl-C stops them all)"
# exec: SIGINT/SIGTERM reach honcho directly, which stops every child and waits for it.
exec python -m honcho start -f "$PROCFILE" -d .
