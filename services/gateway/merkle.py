"""The audit's RFC 6962 Merkle tree: leaves are the entries' digests, in seq order.

Hashing as RFC 6962 section 2.1: a leaf is SHA-256(0x00 || digest bytes), an inner node
SHA-256(0x01 || left || right), the empty tree SHA-256(""). The writer keeps the tree's right edge
(the ``frontier``: the roots of its perfect subtrees, largest first) beside the chain head and
stores every perfect subtree of at least ``STORED_LEVEL`` levels as it completes, so a proof needs
O(log n) reads whatever the log's size; smaller subtrees are hashed from their leaves' digests.
A checkpoint signs its tree head as RFC 6962's TreeHeadSignature (section 3.5), with Ed25519.

Plain functions over bytes; ``Nodes`` is how a proof reads a perfect subtree's hash.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable

EMPTY_ROOT = hashlib.sha256(b"").digest()
STORED_LEVEL = 4  # subtrees of 16 leaves and more are stored: about one row per 8 entries
# Nodes(level, index): the root of the perfect subtree over leaves index*2^level ... +2^level.
Nodes = Callable[[int, int], bytes]


def leaf_hash(entry_digest: str) -> bytes:
    return hashlib.sha256(b"\x00" + bytes.fromhex(entry_digest)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def append(
    frontier: list[bytes], size: int, leaf: bytes
) -> tuple[list[bytes], list[tuple[int, int, bytes]]]:
    """The frontier after one more leaf (the tree held ``size``), and the perfect subtrees the
    leaf completes as (level, index, hash)."""
    frontier = [*frontier, leaf]
    completed = []
    level, index, remaining = 0, size, size
    while remaining & 1:
        right, left = frontier.pop(), frontier.pop()
        frontier.append(node_hash(left, right))
        level, index, remaining = level + 1, index >> 1, remaining >> 1
        completed.append((level, index, frontier[-1]))
    return frontier, completed


def root(frontier: list[bytes]) -> bytes:
    """The tree head of the tree whose right edge is ``frontier``."""
    if not frontier:
        return EMPTY_ROOT
    current = frontier[-1]
    for left in reversed(frontier[:-1]):
        current = node_hash(left, current)
    return current


def frontier_text(frontier: list[bytes]) -> str:
    return ",".join(h.hex() for h in frontier)


def frontier_of(text: str | None) -> list[bytes]:
    return [bytes.fromhex(part) for part in text.split(",")] if text else []


def _split(size: int) -> int:
    """The largest power of two smaller than ``size`` (size > 1)."""
    return 1 << ((size - 1).bit_length() - 1)


def subtree(lo: int, hi: int, nodes: Nodes) -> bytes:
    """MTH(D[lo:hi]) for a range starting on a boundary of its largest perfect subtree."""
    size = hi - lo
    if size & (size - 1) == 0 and lo % size == 0:
        level = size.bit_length() - 1
        return nodes(level, lo >> level)
    k = _split(size)
    return node_hash(subtree(lo, lo + k, nodes), subtree(lo + k, hi, nodes))


def inclusion_proof(index: int, size: int, nodes: Nodes) -> list[bytes]:
    """RFC 6962 section 2.1.1 PATH(index, D[0:size])."""
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(subtree(lo + k, hi, nodes))
            hi = lo + k
        else:
            path.append(subtree(lo, lo + k, nodes))
            lo = lo + k
    return path[::-1]


def consistency_proof(first: int, second: int, nodes: Nodes) -> list[bytes]:
    """RFC 6962 section 2.1.2 PROOF(first, D[0:second]) for 0 < first <= second."""
    path: list[bytes] = []
    lo, hi, whole = 0, second, True
    while first != hi:
        k = _split(hi - lo)
        if first - lo <= k:
            path.append(subtree(lo + k, hi, nodes))
            hi = lo + k
        else:
            path.append(subtree(lo, lo + k, nodes))
            lo, whole = lo + k, False
    if not whole:
        path.append(subtree(lo, hi, nodes))
    return path[::-1]


def tree_head_message(timestamp_ms: int, size: int, root_hash: bytes) -> bytes:
    """RFC 6962 section 3.5 TreeHeadSignature: version v1, signature type tree_hash."""
    return struct.pack(">BBQQ", 0, 1, timestamp_ms, size) + root_hash
