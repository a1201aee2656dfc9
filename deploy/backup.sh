#!/usr/bin/env bash
# Dumps each service's database (pg_dump custom format) into a folder:
#   PGHOST=... PGUSER=postgres PGPASSWORD=... bash deploy/backup.sh /backups/2025-01-31
# One file per service: <database>.dump. CSP_DB_NAME_PREFIX (default "csp_") as in init-databases.sh.
set -euo pipefail

target="${1:?usage: backup.sh FOLDER}"
prefix="${CSP_DB_NAME_PREFIX:-csp_}"
mkdir -p "$target"
chmod 700 "$target"  # the dumps hold personal data: owner-only
for service in gateway agreements ingest depersonalise; do
    database="${prefix}${service}"
    pg_dump --format=custom --no-password --file "$target/${database}.dump" --dbname "$database"
    echo "dumped ${database} to $target/${database}.dump"
done
