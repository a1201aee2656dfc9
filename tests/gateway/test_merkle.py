"""The audit's Merkle tree against RFC 6962: the published test vectors, and a reference
implementation of MTH, PATH and PROOF written straight from the RFC's definitions."""

from __future__ import annotations

import hashlib

import pytest
from csp_cli.tree import consistency_ok, inclusion_ok

from services.gateway import merkle

# RFC 6962 test leaves and the tree heads of their first 1..8 (the Certificate Transparency ones).
LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
          "606162636465666768696a6b6c6d6e6f"]  # fmt: skip
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 2.1: MTH over leaf data."""
    if not leaves:
        return h(b"")
    if len(leaves) == 1:
        return h(b"\x00" + leaves[0])
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return h(b"\x01" + mth(leaves[:k]) + mth(leaves[k:]))


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 2.1.1 PATH(m, D[n])."""
    if len(leaves) <= 1:
        return []
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    """RFC 6962 2.1.2 SUBPROOF(m, D[n], b)."""
    if m == len(leaves):
        return [] if whole else [mth(leaves)]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    if m <= k:
        return [*subproof(m, leaves[:k], whole), mth(leaves[k:])]
    return [*subproof(m - k, leaves[k:], False), mth(leaves[:k])]


def tree(digests: list[str]) -> tuple[list[bytes], merkle.Nodes]:
    """Frontiers after each leaf, and the node source the gateway's stored tree would give."""
    stored: dict[tuple[int, int], bytes] = {}
    frontier: list[bytes] = []
    roots = []
    for i, digest in enumerate(digests):
        leaf = merkle.leaf_hash(digest)
        stored[(0, i)] = leaf
        frontier, completed = merkle.append(frontier, i, leaf)
        stored.update({(level, index): value for level, index, value in completed})
        roots.append(merkle.root(frontier))
    return roots, lambda level, index: stored[(level, index)]


def test_tree_heads_are_the_rfc_6962_test_vectors() -> None:
    roots, _nodes = tree(LEAVES)
    assert [r.hex() for r in roots] == ROOTS
    assert merkle.root([]) == h(b"")


def test_proofs_of_the_eight_leaf_tree_are_the_published_ones() -> None:
    _roots, nodes = tree(LEAVES)
    assert [p.hex() for p in merkle.inclusion_proof(0, 8, nodes)] == [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]
    assert [p.hex() for p in merkle.consistency_proof(6, 8, nodes)] == [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ]
    assert [p.hex() for p in merkle.consistency_proof(2, 5, nodes)] == [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 9, 16, 31, 33, 70])
def test_proofs_match_the_rfc_definitions_and_verify(size: int) -> None:
    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(size)]
    data = [bytes.fromhex(d) for d in digests]
    roots, nodes = tree(digests)
    assert roots[-1] == mth(data)
    for m in range(size):
        proof = merkle.inclusion_proof(m, size, nodes)
        assert proof == path(m, data)
        hexes = [p.hex() for p in proof]
        assert inclusion_ok(m, size, merkle.leaf_hash(digests[m]), hexes, roots[-1].hex())
        assert not inclusion_ok(m, size, merkle.leaf_hash("ff"), hexes, roots[-1].hex())
    for first in range(1, size):
        proof = merkle.consistency_proof(first, size, nodes)
        assert proof == subproof(first, data, True)
        hexes = [p.hex() for p in proof]
        old, new = roots[first - 1].hex(), roots[-1].hex()
        assert consistency_ok(first, old, size, new, hexes)
        # A rewritten first tree (or a wrong new head) does not verify.
        assert not consistency_ok(first, mth([*data[: first - 1], b"x"]).hex(), size, new, hexes)
        assert not consistency_ok(first, old, size, roots[first - 1].hex(), hexes)
