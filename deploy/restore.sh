#!/usr/bin/env bash
# Restores the dumps of deploy/backup.sh: each service's database is dropped, re-created empty
# (owned by the service's role, made by init-databases.sh) and filled from its dump:
#   PGHOST=... PGUSER=postgres PGPASSWORD=... bash deploy/restore.sh /backups/2025-01-31 [SERVICE...]
# Stop the services first (docker compose stop ... / kubectl scale --replicas=0).
set -euo pipefail

source_dir="${1:?usage: restore.sh FOLDER [SERVICE...]}"
shift
prefix="${CSP_DB_NAME_PREFIX:-csp_}"
services=("$@")
[ "${#services[@]}" -gt 0 ] || services=(gateway agreements ingest depersonalise)
for service in "${services[@]}"; do
    database="${prefix}${service}"
    dump="$source_dir/${database}.dump"
    [ -f "$dump" ] || { echo "no dump $dump" >&2; exit 1; }
    pg_restore --list "$dump" >/dev/null  # a damaged dump fails here, before anything is dropped
    psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --no-password --dbname postgres -v name="$database" <<'SQL'
SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', :'name') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'name') \gexec
SQL
    # Objects are re-created owned by the service's own role, whoever runs the restore.
    pg_restore --no-owner --role="$database" --single-transaction \
        --exit-on-error --no-password --dbname "$database" "$dump"
    echo "restored ${database} from ${dump}"
done
