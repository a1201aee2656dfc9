"""Checking the hub's RFC 6962 audit proofs (RFC 9162 sections 2.1.3.2 and 2.1.4.2), client side.

Hashes are hex strings as the hub sends them; a leaf is SHA-256(0x00 || entry digest), a node
SHA-256(0x01 || left || right).
"""

from __future__ import annotations

import hashlib
import struct


def leaf_hash(entry_digest: str) -> bytes:
    return hashlib.sha256(b"\x00" + bytes.fromhex(entry_digest)).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def tree_head_message(timestamp_ms: int, size: int, root: str) -> bytes:
    """What a checkpoint's ``tree_signature`` signs (RFC 6962 TreeHeadSignature)."""
    return struct.pack(">BBQQ", 0, 1, timestamp_ms, size) + bytes.fromhex(root)


def inclusion_ok(index: int, size: int, leaf: bytes, proof: list[str], root: str) -> bool:
    """Whether ``proof`` shows the leaf at ``index`` in the tree of ``size`` with ``root``."""
    if index >= size:
        return False
    fn, sn, current = index, size - 1, leaf
    for step in (bytes.fromhex(p) for p in proof):
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            current = _node(step, current)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            current = _node(current, step)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and current.hex() == root


def consistency_ok(size1: int, root1: str, size2: int, root2: str, proof: list[str]) -> bool:
    """Whether ``proof`` shows the tree of ``size2`` extends the tree of ``size1`` unchanged."""
    if size1 == 0:
        return not proof  # every tree extends the empty one
    if size1 == size2:
        return not proof and root1 == root2
    if size1 > size2 or not proof:
        return False
    path = [bytes.fromhex(p) for p in proof]
    if size1 & (size1 - 1) == 0:  # a power of two: the first tree is a subtree of the proof
        path.insert(0, bytes.fromhex(root1))
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    first = second = path[0]
    for step in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            first, second = _node(step, first), _node(step, second)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            second = _node(second, step)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and first.hex() == root1 and second.hex() == root2
