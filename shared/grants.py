"""The grants a forwarded read carries, as provider slices: which records, which fields each shows.

The agreements service decides; the gateway carries its ``grants`` in the internal token; ingest and
depersonalise read them through this module so both apply one provider's terms to that provider's
records only. A token without ``grants`` (a peer service, or an older gateway) is read as one grant
per listed provider with the token's ``fields`` and ``window``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from shared.tokens import InternalClaims


@dataclass(frozen=True)
class Term:
    """One agreement's terms for one provider: records with occurred_at in ``start..end``."""

    start: date | None
    end: date | None  # inclusive
    fields: frozenset[str] | None  # None: every field

    def covers(self, day: date | None) -> bool:
        if day is None:
            return False
        return (self.start is None or day >= self.start) and (self.end is None or day <= self.end)


def _day(text: Any) -> date | None:
    return date.fromisoformat(str(text)[:10]) if text else None


def _term(fields: Iterable[str] | None, start: Any, end: Any) -> Term:
    return Term(_day(start), _day(end), None if fields is None else frozenset(fields))


@dataclass(frozen=True)
class Shown:
    """The fields one record may show: ``names``, or every field when None."""

    names: frozenset[str] | None

    def __contains__(self, name: object) -> bool:
        return self.names is None or name in self.names


@dataclass(frozen=True)
class Slices:
    """Provider -> the terms under which its records reach this caller."""

    by_provider: dict[str, tuple[Term, ...]]

    @property
    def providers(self) -> list[str]:
        return sorted(self.by_provider)

    def fields_for(self, provider: str, day: date | None) -> Shown | None:
        """What a record of ``provider`` that occurred on ``day`` may show, or None when no grant
        covers it (grants between the same two parties combine; no other grant counts)."""
        covering = [t for t in self.by_provider.get(provider, ()) if t.covers(day)]
        if not covering:
            return None
        if any(t.fields is None for t in covering):
            return Shown(None)
        return Shown(frozenset().union(*(t.fields or frozenset() for t in covering)))

    def windows(self) -> list[tuple[str, date | None, date | None]]:
        """(provider, first day, last day) of every term, for filtering in a query."""
        return [(p, t.start, t.end) for p, terms in self.by_provider.items() for t in terms]

    def uniform_fields(self) -> list[str] | None:
        """Every field some grant shows (None: every field)."""
        names: set[str] = set()
        for terms in self.by_provider.values():
            for term in terms:
                if term.fields is None:
                    return None
                names |= term.fields
        return sorted(names)


def slices_of(grants: Iterable[dict[str, Any]]) -> Slices:
    """The provider slices of a decision's grants."""
    found: dict[str, list[Term]] = {}
    for grant in grants:
        term = _term(grant.get("fields"), grant.get("from"), grant.get("to"))
        found.setdefault(str(grant["provider"]), []).append(term)
    return Slices({p: tuple(terms) for p, terms in found.items()})


def slices(claims: InternalClaims) -> Slices:
    """The provider slices of a forwarded read."""
    if claims.grants is not None:
        return slices_of(claims.grants)
    found: dict[str, list[Term]] = {}
    start, end = (claims.window[0], claims.window[1]) if claims.window else (None, None)
    for provider in claims.providers or []:
        found.setdefault(provider, []).append(_term(claims.fields, start, end))
    return Slices({p: tuple(terms) for p, terms in found.items()})
