"""The key that signs audit checkpoints and tree heads: where it comes from, which keys a
verifier may trust, and the table every public key stays in (so old checkpoints still verify)."""

from __future__ import annotations

import base64
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import SecretStr
from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from services.gateway import chain, merkle
from services.gateway.audit_entries import SIGNING_KEY


class Signer:
    """The Ed25519 key that signs checkpoints."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self.private = private
        public_raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public_b64 = base64.b64encode(public_raw).decode("ascii")
        self.key_id = chain.public_key_id(public_raw)

    def sign(self, seq: int, head: str, at: str) -> str:
        return base64.b64encode(self.private.sign(chain.checkpoint_message(seq, head, at))).decode()

    def sign_tree(self, timestamp_ms: int, size: int, root: bytes) -> str:
        message = merkle.tree_head_message(timestamp_ms, size, root)
        return base64.b64encode(self.private.sign(message)).decode()


def configured_seed(value: SecretStr | None, file: str | None) -> str | None:
    """The signing seed from outside the database: the setting, else the file it names."""
    if value is not None:
        return value.get_secret_value().strip() or None
    if file:
        return Path(file).read_text(encoding="ascii").strip() or None
    return None


def trusted_keys(signer: Signer, earlier: list[str]) -> dict[str, str]:
    """The public keys a verifier may trust: the configured signer's and earlier ones given."""
    keys = {signer.key_id: signer.public_b64}
    for public in earlier:
        keys[chain.public_key_id(base64.b64decode(public))] = public
    return keys


def load_signer(connection: Connection, configured_seed: str | None) -> Signer:
    """The configured key, else the newest key generated into the DB, else a new one stored there.

    Every public key stays in the table, so checkpoints signed before a rotation still verify.
    """
    if configured_seed:
        signer = Signer(Ed25519PrivateKey.from_private_bytes(base64.b64decode(configured_seed)))
        return _register(connection, signer, None)
    row = connection.execute(
        select(SIGNING_KEY.c.private_seed)
        .where(SIGNING_KEY.c.private_seed.is_not(None))
        .order_by(SIGNING_KEY.c.created_at.desc())
        .limit(1)
    ).first()
    if row is not None:
        signer = Signer(Ed25519PrivateKey.from_private_bytes(base64.b64decode(row[0])))
        return _register(connection, signer, None)
    private = Ed25519PrivateKey.generate()
    seed = base64.b64encode(private.private_bytes_raw()).decode("ascii")
    return _register(connection, Signer(private), seed)


def _register(connection: Connection, signer: Signer, seed: str | None) -> Signer:
    known = connection.execute(
        select(SIGNING_KEY.c.key_id).where(SIGNING_KEY.c.key_id == signer.key_id)
    ).first()
    if known is None:
        connection.execute(
            insert(SIGNING_KEY).values(
                key_id=signer.key_id,
                public_key=signer.public_b64,
                private_seed=seed,
                created_at=time.time(),
            )
        )
    return signer
