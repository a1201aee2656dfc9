"""The code lists agreements cite — purposes and legal bases — read from the TOML files beside."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Purpose:
    code: str
    name: str
    description: str
    typical_level: str


@dataclass(frozen=True)
class LegalBasis:
    code: str
    name: str
    statute: str
    provision: str
    description: str
    permits_personal: bool
    art9_condition: bool
    art10_condition: bool
    law_enforcement: bool


@dataclass(frozen=True)
class CodeLists:
    purposes: dict[str, Purpose]
    legal_bases: dict[str, LegalBasis]


def _entries(path: Path, key: str) -> list[dict[str, Any]]:
    with path.open("rb") as handle:
        entries: list[dict[str, Any]] = tomllib.load(handle)[key]
    codes = [entry["code"] for entry in entries]
    if len(codes) != len(set(codes)):
        raise ValueError(f"{path.name}: a code appears twice")
    return entries


def load_code_lists(folder: Path) -> CodeLists:
    purposes = [Purpose(**entry) for entry in _entries(folder / "purposes.toml", "purposes")]
    bases = [LegalBasis(**entry) for entry in _entries(folder / "legal_bases.toml", "legal_bases")]
    return CodeLists(purposes={p.code: p for p in purposes}, legal_bases={b.code: b for b in bases})
