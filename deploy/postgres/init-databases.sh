#!/usr/bin/env bash
# Creates one role and one database per service, each role owning only its own database.
# Run by the postgres:15 image from /docker-entrypoint-initdb.d on an empty data volume, or by hand:
#   PGHOST=db.example PGUSER=postgres CSP_GATEWAY_DB_PASSWORD=... bash deploy/postgres/init-databases.sh
# CSP_DB_NAME_PREFIX (default "csp_") names the databases and roles: csp_gateway, csp_agreements...
set -euo pipefail

prefix="${CSP_DB_NAME_PREFIX:-csp_}"
admin_user="${POSTGRES_USER:-${PGUSER:-postgres}}"

for service in gateway agreements ingest depersonalise; do
    upper="$(printf '%s' "$service" | tr '[:lower:]' '[:upper:]')"
    password_var="CSP_${upper}_DB_PASSWORD"
    password="${!password_var:?${password_var} must be set}"
    name="${prefix}${service}"
    # psql variables (:'x', :"x") quote the values, so a password cannot break the statement.
    psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$admin_user" --dbname postgres \
        -v name="$name" -v password="$password" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'name', :'password')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'name') \gexec
SELECT format('ALTER ROLE %I PASSWORD %L', :'name', :'password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'name') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'name') \gexec
SQL
    echo "database ${name} ready (owner ${name})"
done
