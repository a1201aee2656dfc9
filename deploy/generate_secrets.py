"""Generates the hub's secrets for a new deployment (standard library only; run from the repo).

python deploy/generate_secrets.py compose > .env              # for docker compose
python deploy/generate_secrets.py k8s deploy/k8s/secrets --pg-host db.internal
python deploy/generate_secrets.py value token-key             # one new value, for rotation
python deploy/generate_secrets.py public-key <base64 seed>    # the public key of a token key
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import secrets
import sys
from pathlib import Path

SERVICES = ("gateway", "agreements", "ingest", "depersonalise")
# The services that sign internal tokens (shared/tokens.py SIGNERS), each with its own key.
SIGNERS = ("gateway", "ingest", "depersonalise")

# Ed25519 (RFC 8032) for the public key of a seed, so this script needs no package.
_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960


def _add(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    e = (a[1] - a[0]) * (b[1] - b[0]) % _P
    f = (a[1] + a[0]) * (b[1] + b[0]) % _P
    c = 2 * a[3] * b[3] * _D % _P
    d = 2 * a[2] * b[2] % _P
    return ((f - e) * (d - c), (d + c) * (f + e), (d - c) * (d + c), (f - e) * (f + e))


def public_key(seed_b64: str) -> str:
    """The base64 public key of an Ed25519 key given as the base64 of its 32-byte seed."""
    digest = hashlib.sha512(base64.b64decode(seed_b64, validate=True)).digest()
    scalar = (int.from_bytes(digest[:32], "little") & ((1 << 254) - 8)) | (1 << 254)
    point, total = (_BX, _BY, 1, _BX * _BY % _P), (0, 1, 1, 0)
    while scalar:
        if scalar & 1:
            total = _add(total, point)
        point, scalar = _add(point, point), scalar >> 1
    inverse = pow(total[2], _P - 2, _P)
    x, y = total[0] * inverse % _P, total[1] * inverse % _P
    return base64.b64encode((y | (x & 1) << 255).to_bytes(32, "little")).decode("ascii")


def token_keys() -> dict[str, str]:
    """Each signer's token key and ``CSP_INTERNAL_PUBLIC_KEYS``, the public keys backends check."""
    seeds = {name: new_value("token-key") for name in SIGNERS}
    values = {f"CSP_{name.upper()}_TOKEN_KEY": seed for name, seed in seeds.items()}
    public = ",".join(f"{name}:{public_key(seed)}" for name, seed in seeds.items())
    values["CSP_INTERNAL_PUBLIC_KEYS"] = public
    return values


def new_value(kind: str) -> str:
    """A fresh random value; operators' and agency keys share the ``csp_`` prefix of issued keys."""
    if kind == "admin-key":
        # The gateway's own key format: csp_<public key id>_<secret>.
        return f"csp_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    if kind in ("audit-signing-key", "oauth-signing-key", "token-key"):
        return base64.b64encode(secrets.token_bytes(32)).decode("ascii")  # an Ed25519 seed
    if kind == "key-secret":  # the record or cell key secret
        return secrets.token_urlsafe(48)
    if kind == "password":
        return secrets.token_urlsafe(24)
    raise ValueError(f"unknown kind {kind!r}")


def compose_env() -> dict[str, str]:
    values = {
        "POSTGRES_PASSWORD": new_value("password"),
        **token_keys(),
        "CSP_INGEST_RECORD_KEY_SECRET": new_value("key-secret"),
        "CSP_DEPERSONALISE_CELL_KEY_SECRET": new_value("key-secret"),
        "CSP_ADMIN_KEY": new_value("admin-key"),
        "CSP_GATEWAY_AUDIT_SIGNING_KEY": new_value("audit-signing-key"),
        "CSP_GATEWAY_OAUTH_SIGNING_KEY": new_value("oauth-signing-key"),
    }
    for service in SERVICES:
        values[f"CSP_{service.upper()}_DB_PASSWORD"] = new_value("password")
    return values


def database_url(service: str, password: str, host: str, port: int, prefix: str) -> str:
    name = prefix + service
    return f"postgresql+psycopg://{name}:{password}@{host}:{port}/{name}"


def k8s_env_files(host: str, port: int, prefix: str) -> dict[str, dict[str, str]]:
    """One env file per Kubernetes Secret the manifests reference (see deploy/k8s/base)."""
    keys = token_keys()
    files: dict[str, dict[str, str]] = {
        "internal.env": {"CSP_INTERNAL_PUBLIC_KEYS": keys["CSP_INTERNAL_PUBLIC_KEYS"]},
        "db-passwords.env": {},
    }
    for service in SERVICES:
        password = new_value("password")
        files["db-passwords.env"][f"CSP_{service.upper()}_DB_PASSWORD"] = password
        files[f"{service}.env"] = {
            f"CSP_{service.upper()}_DATABASE_URL": database_url(
                service, password, host, port, prefix
            )
        }
    for name in SIGNERS:
        files[f"{name}.env"][f"CSP_{name.upper()}_TOKEN_KEY"] = keys[
            f"CSP_{name.upper()}_TOKEN_KEY"
        ]
    files["ingest.env"]["CSP_INGEST_RECORD_KEY_SECRET"] = new_value("key-secret")
    files["depersonalise.env"]["CSP_DEPERSONALISE_CELL_KEY_SECRET"] = new_value("key-secret")
    files["gateway.env"]["CSP_ADMIN_KEY"] = new_value("admin-key")
    files["gateway.env"]["CSP_GATEWAY_AUDIT_SIGNING_KEY"] = new_value("audit-signing-key")
    files["gateway.env"]["CSP_GATEWAY_OAUTH_SIGNING_KEY"] = new_value("oauth-signing-key")
    return files


def render(values: dict[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in values.items())


def write_private(path: Path, text: str) -> None:
    # Created owner-only from the start, so the secret is never readable by others.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("compose", help="print a .env for docker compose")
    k8s = commands.add_parser("k8s", help="write one env file per Kubernetes Secret")
    k8s.add_argument("directory", type=Path)
    k8s.add_argument("--pg-host", required=True)
    k8s.add_argument("--pg-port", type=int, default=5432)
    k8s.add_argument("--db-prefix", default="csp_")
    value = commands.add_parser("value", help="print one new value")
    value.add_argument(
        "kind",
        choices=(
            "admin-key",
            "token-key",
            "key-secret",
            "password",
            "audit-signing-key",
            "oauth-signing-key",
        ),
    )
    public = commands.add_parser("public-key", help="print the public key of a token key")
    public.add_argument("seed", help="the base64 seed (CSP_<SERVICE>_TOKEN_KEY)")
    args = parser.parse_args(argv)

    if args.command == "compose":
        sys.stdout.write(render(compose_env()))
    elif args.command == "k8s":
        args.directory.mkdir(parents=True, exist_ok=True)
        for name, values in k8s_env_files(args.pg_host, args.pg_port, args.db_prefix).items():
            write_private(args.directory / name, render(values))
            print(f"wrote {args.directory / name}")
    elif args.command == "public-key":
        print(public_key(args.seed))
    else:
        print(new_value(args.kind))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
