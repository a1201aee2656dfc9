"""An attacker of disclosure across answers, built only on what one recipient can fetch.

The recipient holds aggregates answers (the JSON bodies as the API returns them, with the query
each was asked with and the ``grants`` that ``POST /v1/decisions`` names for the purpose used),
and knows the structure any recipient can learn: which finest area each area of a coarser layer
covers (found from the layers' geometries), and how period labels nest (``2024-01`` in
``2024-Q1`` in ``2024``).

Unknowns: one count per provider × finest area (and one pseudo-area outside the finest layer) ×
finest period × (breakdown field, value), plus each row's total, tied by the identity
total = Σ values of each field. Every published count is an equation (an interval when counts are
rounded or perturbed), as is every ``disclosure.records`` and ``records_outside_layer`` that is
not null; a suppressed cell is a sum within its bounds (1..t-1 when it is known to be primary,
at least 0 otherwise); every unknown is at least 0. Each suppressed cell is then minimised and
maximised by linear programming (HiGHS) within its connected component of the system, after the
unknowns that the equations fix are substituted out. A cell whose integer interval is one value
is *determined*.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

import numpy as np
from scipy import sparse
from scipy.optimize import linprog
from scipy.sparse.linalg import lsqr

OUTSIDE = "\x00outside"  # the pseudo-area of records outside the finest layer
WITHHELD = "withheld"  # the value a provider's records take when its grant leaves the field out
TOTAL = None  # the dimension of a row total
EPS = 1e-6

# (provider, finest area, finest period label, dimension or None, value or None)
Key = tuple[str, str, str, str | None, str | None]


# --- periods ----------------------------------------------------------------------------------


def _month_start(year: int, month: int) -> date:
    return date(year + (month - 1) // 12, (month - 1) % 12 + 1, 1)


def label_span(label: str) -> tuple[date, date]:
    """First and last day of a period label: ``2024-01``, ``2024-Q1``, ``2024``, ``2024-W05``."""
    if "-W" in label:
        year, week = label.split("-W")
        first = date.fromisocalendar(int(year), int(week), 1)
        return first, first + timedelta(days=6)
    if "-Q" in label:
        year, quarter = label.split("-Q")
        start = date(int(year), 3 * int(quarter) - 2, 1)
        return start, _month_start(start.year, start.month + 3) - timedelta(days=1)
    if "-" in label:
        year, month = label.split("-")
        start = date(int(year), int(month), 1)
        return start, _month_start(start.year, start.month + 1) - timedelta(days=1)
    return date(int(label), 1, 1), date(int(label), 12, 31)


def period_start(day: date, period: str) -> date:
    if period == "year":
        return date(day.year, 1, 1)
    if period == "quarter":
        return date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
    if period == "month":
        return date(day.year, day.month, 1)
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day


def finest_labels(label: str, resolution: str) -> list[str]:
    """The finest periods (``month`` or ``quarter``) a label covers."""
    first, last = label_span(label)
    if period_start(first, resolution) != first:
        raise ValueError(f"{label} does not nest in {resolution}s")
    out = []
    day = first
    while day <= last:
        if resolution == "month":
            out.append(f"{day.year}-{day.month:02d}")
            day = _month_start(day.year, day.month + 1)
        else:
            out.append(f"{day.year}-Q{(day.month - 1) // 3 + 1}")
            day = _month_start(day.year, day.month + 3)
    if label_span(out[-1])[1] != last:
        raise ValueError(f"{label} does not nest in {resolution}s")
    return out


# --- what the recipient holds -----------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """One grant of a decision: a provider's records reach the caller in ``start..end``."""

    provider: str
    fields: frozenset[str] | None
    start: date | None
    end: date | None

    @classmethod
    def of(cls, grant: Mapping[str, Any]) -> Grant:
        fields = grant.get("fields")
        return cls(
            str(grant["provider"]),
            None if fields is None else frozenset(fields),
            date.fromisoformat(str(grant["from"])[:10]) if grant.get("from") else None,
            date.fromisoformat(str(grant["to"])[:10]) if grant.get("to") else None,
        )


@dataclass
class Answer:
    """One aggregates answer: the query asked, the grants it was read under, the body."""

    params: dict[str, str]
    grants: list[dict[str, Any]]
    body: dict[str, Any]


@dataclass
class Structure:
    """What the recipient knows of the layers: ``nesting[layer][area]`` = finest areas."""

    finest_layer: str
    nesting: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    resolution: str = "month"


def nesting_from_geometries(
    fine: Mapping[str, Any], coarse: Mapping[str, Any], share: float = 0.99
) -> dict[str, list[str]]:
    """Each coarse area → the fine areas lying (at least ``share`` of their area) inside it."""
    from shapely.strtree import STRtree

    codes = list(coarse)
    tree = STRtree([coarse[c] for c in codes])
    nested: dict[str, list[str]] = {c: [] for c in codes}
    for code, shape in fine.items():
        for i in tree.query(shape):
            other = coarse[codes[int(i)]]
            if shape.area and shape.intersection(other).area >= share * shape.area:
                nested[codes[int(i)]].append(code)
                break
    return nested


# --- the system -------------------------------------------------------------------------------


@dataclass
class Row:
    """lo ≤ Σ coef·x ≤ hi over unknowns (indices)."""

    terms: dict[int, float]
    lo: float
    hi: float


@dataclass
class Target:
    """A suppressed cell: the unknowns it sums, its bounds, and where it was seen."""

    unknowns: frozenset[int]
    lo: float
    hi: float
    threshold: int
    where: str
    primary: bool = False
    small: bool = False  # a base cell whose true value is 1..t-1 (known to the test only)
    truth: int | None = None
    unresolved: bool = False  # the attack's time ran out before this cell was settled
    low: float | None = None  # the LP's minimum
    high: float | None = None  # the LP's maximum (inf: unbounded)

    @property
    def interval(self) -> tuple[int, float]:
        assert self.low is not None and self.high is not None
        high = math.floor(self.high + EPS) if math.isfinite(self.high) else math.inf
        return math.ceil(self.low - EPS), high

    @property
    def determined(self) -> bool:
        low, high = self.interval
        return low >= high


@dataclass
class Report:
    answers: int
    unknowns: int
    equations: int
    components: int
    largest_component: int
    suppressed: int
    determined: int
    wrong: int  # determined cells whose value is not the truth (a modelling fault)
    primaries: int  # suppressed cells whose true value is 1..t-1
    narrowed: int  # of those, with an interval narrower than 1..t-1
    smallest_width: int | None  # the narrowest interval of a primary cell (t-2 when none narrowed)
    inconsistent: int  # equations the truth violates (a modelling fault); 0 without truth
    unresolved: int  # cells left unsettled when the time given ran out
    lps: int
    seconds: float
    examples: list[str]
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step

    def summary(self) -> str:
        return (
            f"{self.answers} answers, {self.unknowns} unknowns, {self.equations} equations, "
            f"{self.components} components (largest {self.largest_component}); "
            f"{self.suppressed} suppressed cells, {self.determined} determined "
            f"({self.wrong} wrongly), {self.narrowed} of {self.primaries} primaries narrowed "
            f"(smallest width {self.smallest_width}); {self.unresolved} unresolved; "
            f"{self.lps} LPs in {self.seconds:.1f} s {self.phases}"
        )


class System:
    """The linear system of everything published in a recipient's answers."""

    def __init__(self, structure: Structure, atoms: Mapping[str, str] | None = None) -> None:
        self.structure = structure
        self.atoms = dict(atoms or {})
        self.index: dict[Key, int] = {}
        self.keys: list[Key] = []
        self.rows: list[Row] = []
        self.targets: dict[frozenset[int], Target] = {}
        self.dims: dict[str, set[str]] = {}
        self.answers = 0

    def unknown(self, key: Key) -> int:
        found = self.index.get(key)
        if found is None:
            found = self.index[key] = len(self.keys)
            self.keys.append(key)
        return found

    # areas and periods of a cell

    def finest_areas(self, layer: str, area: str) -> list[str] | None:
        if layer == self.structure.finest_layer:
            return [area]
        nested = self.structure.nesting.get(layer)
        if nested is None:
            return None
        return nested.get(area)

    def layer_areas(self, layer: str, body: Mapping[str, Any]) -> set[str] | None:
        found: set[str] = set()
        for cell in body["cells"]:
            areas = self.finest_areas(layer, cell["area"])
            if areas is None:
                return None
            found.update(areas)
        return found

    def covered(self, label: str, period: str, params: Mapping[str, str]) -> list[str]:
        """The finest periods a cell of ``label`` counts, given the range asked."""
        first = date.fromisoformat(params["from"]) if params.get("from") else None
        last = date.fromisoformat(params["to"]) if params.get("to") else None
        out = []
        for fine in finest_labels(label, self.structure.resolution):
            start = label_span(fine)[0]
            if first is not None and start < period_start(first, period):
                continue
            if last is not None and start > last:
                continue
            out.append(fine)
        return out

    # building

    def add(self, answer: Answer) -> bool:
        """Add an answer's equations and suppressed cells; False when its layer is unknown."""
        body, params = answer.body, answer.params
        layer, period = body["geography"], body["period"]
        layer_areas = self.layer_areas(layer, body)
        if layer_areas is None:
            return False
        grants = list(
            {
                replace(grant, provider=self.atoms.get(grant.provider, grant.provider)): None
                for grant in (Grant.of(g) for g in answer.grants)
            }
        )
        by = params.get("by") or None
        rule = body.get("rule") or {}
        threshold = int(rule.get("threshold") or 1)
        perturbation = rule.get("perturbation") or None
        slack = (
            float(perturbation["max"])
            if perturbation
            else float(int(rule["round_to"]) // 2)
            if rule.get("round_to")
            else 0.0
        )
        self.answers += 1
        spans: set[str] = set()
        seen_values: set[str] = set()
        for cell in body["cells"]:
            areas = self.finest_areas(layer, cell["area"]) or []
            fines = self.covered(cell["period"], period, params)
            spans.update(fines)
            value = str(cell[by]) if by else None
            if value is not None:
                seen_values.add(value)
                self.dims.setdefault(str(by), set()).add(value)
            unknowns = self._cell_unknowns(grants, areas, fines, by, value)
            where = f"{layer}/{cell['area']}/{cell['period']}" + (f"/{value}" if by else "")
            if cell.get("count") is not None:
                count = float(cell["count"])
                self._equation(unknowns, count - slack, count + slack)
            else:
                self._suppressed(unknowns, cell.get("suppressed"), threshold, where)
        disclosure = body.get("disclosure") or {}
        fines = sorted(spans)
        exact = float(perturbation["max"]) if perturbation else 0.0
        if disclosure.get("records") is not None:
            unknowns = self._cell_unknowns(grants, sorted(layer_areas), fines, None, None)
            self._equation(unknowns, disclosure["records"] - exact, disclosure["records"] + exact)
        if disclosure.get("records_outside_layer") is not None:
            outside = [OUTSIDE, *sorted(self._all_finest() - layer_areas)]
            unknowns = self._cell_unknowns(grants, outside, fines, None, None)
            value = disclosure["records_outside_layer"]
            self._equation(unknowns, value - exact, value + exact)
        if by:
            # The table is complete over the values seen: a value it lacks counted nothing.
            for value in self.dims.get(str(by), set()) - seen_values:
                unknowns = self._cell_unknowns(grants, sorted(layer_areas), fines, by, value)
                self._equation(unknowns, 0.0, 0.0)
        return True

    def _all_finest(self) -> set[str]:
        found = {a for (_, a, _, _, _) in self.keys if a != OUTSIDE}
        for nested in self.structure.nesting.values():
            for areas in nested.values():
                found.update(areas)
        return found

    def _cell_unknowns(
        self,
        grants: Sequence[Grant],
        areas: Iterable[str],
        fines: Sequence[str],
        by: str | None,
        value: str | None,
    ) -> frozenset[int]:
        areas = list(areas)
        out: set[int] = set()
        for fine in fines:
            start, end = label_span(fine)
            for grant in grants:
                if (grant.start and grant.start > start) or (grant.end and grant.end < end):
                    continue  # (a window that cuts a finest period is not modelled)
                shown = by is None or grant.fields is None or by in grant.fields
                if by is not None and not shown and value != WITHHELD:
                    continue
                for area in areas:
                    if by is None or not shown:
                        key: Key = (grant.provider, area, fine, TOTAL, None)
                    else:
                        key = (grant.provider, area, fine, by, value)
                    out.add(self.unknown(key))
        return frozenset(out)

    def _equation(self, unknowns: frozenset[int], lo: float, hi: float) -> None:
        self.rows.append(Row(dict.fromkeys(unknowns, 1.0), max(lo, 0.0), hi))

    def _suppressed(self, unknowns: frozenset[int], label: Any, threshold: int, where: str) -> None:
        primary = label == "primary"
        lo, hi = (1.0, float(threshold - 1)) if primary else (0.0, math.inf)
        known = self.targets.get(unknowns)
        if known is None:
            self.targets[unknowns] = Target(unknowns, lo, hi, threshold, where, primary)
        else:
            known.lo, known.hi = max(known.lo, lo), min(known.hi, hi)
            known.primary = known.primary or primary

    def identities(self) -> None:
        """total = Σ values of each breakdown field, for every row that has both."""
        totals = {key[:3] for key in self.keys if key[3] is None}
        for dim, values in self.dims.items():
            for row in sorted(totals | {k[:3] for k in self.keys if k[3] == dim}):
                terms = {self.unknown((*row, None, None)): 1.0}
                for value in sorted(values):
                    terms[self.unknown((*row, dim, value))] = -1.0
                self.rows.append(Row(terms, 0.0, 0.0))

    # solving

    def attack(
        self,
        truth: Mapping[Key, int] | None = None,
        use_truth_primaries: bool = True,
        exact: bool = False,
        seconds: float | None = None,
    ) -> Report:
        """Bound every suppressed cell; ``truth`` (the test's, never the attacker's) checks the
        model and marks the cells whose true value is 1..t-1, which then get those bounds.

        Without ``exact``, an LP is skipped once the feasible points already found settle the
        question asked of a cell (not determined; for a primary, not narrowed), so ``low`` and
        ``high`` may then be inner estimates of the interval. Past ``seconds`` the cells not yet
        settled are left ``unresolved`` (counted apart, neither determined nor narrowed)."""
        started = time.perf_counter()
        self.identities()
        values = None
        if truth is not None:
            merged: dict[Key, int] = {}
            for (provider, *rest), count in truth.items():
                atom = self.atoms.get(provider, provider)
                key: Key = (atom, *rest)  # type: ignore[assignment]
                merged[key] = merged.get(key, 0) + count
            values = np.array([float(merged.get(k, 0)) for k in self.keys])
            shared = {a for a in self.atoms.values() if list(self.atoms.values()).count(a) > 1}
            for target in self.targets.values():
                target.truth = round(float(sum(values[i] for i in target.unknowns)))
                (only,) = target.unknowns if len(target.unknowns) == 1 else (None,)
                base = only is not None and self.keys[only][0] not in shared
                target.small = base and 1 <= target.truth < target.threshold
                if use_truth_primaries and target.small:
                    target.primary = True
                    target.lo, target.hi = (
                        max(target.lo, 1.0),
                        min(target.hi, float(target.threshold - 1)),
                    )
        rows = self.rows + [
            Row(dict.fromkeys(t.unknowns, 1.0), t.lo, t.hi) for t in self.targets.values()
        ]
        inconsistent = 0
        if values is not None:
            for row in rows:
                total = sum(c * values[i] for i, c in row.terms.items())
                if total < row.lo - EPS or total > row.hi + EPS:
                    inconsistent += 1
        solver = Solver(len(self.keys), rows)
        deadline = None if seconds is None else started + seconds
        phases = {"build": time.perf_counter() - started}
        solver.presolve()
        phases["presolve"] = time.perf_counter() - started - sum(phases.values())
        while solver.fix_by_equalities():
            solver.presolve()
        phases["equalities"] = time.perf_counter() - started - sum(phases.values())
        components = solver.components()
        goals: dict[int, list[Target]] = {}
        for target in self.targets.values():
            root = solver.root_of(target)
            if root is not None:
                goals.setdefault(root, []).append(target)
        lps = 0
        for members, member_rows in components:
            found = goals.get(int(members[0]), [])
            lps += solver.bound(found, members, member_rows, exact, deadline)
        for target in self.targets.values():
            if target.low is None and not target.unresolved:
                solver.bound_fixed(target)
        phases["lps"] = time.perf_counter() - started - sum(phases.values())
        report = self._report(components, inconsistent, lps, started)
        report.phases = {k: round(v, 2) for k, v in phases.items()}
        return report

    def _report(
        self,
        components: list[tuple[np.ndarray, list[Row]]],
        inconsistent: int,
        lps: int,
        started: float,
    ) -> Report:
        targets = [t for t in self.targets.values() if not t.unresolved]
        determined = [t for t in targets if t.determined]
        wrong = [t for t in determined if t.truth is not None and t.interval[0] != t.truth]
        primaries = [t for t in targets if t.small]
        narrowed = [t for t in primaries if t.interval[1] < t.threshold - 1]
        widths = [int(min(t.interval[1], t.threshold - 1) - t.interval[0]) for t in primaries]
        examples = [
            f"{t.where} = {t.interval[0]}" + ("" if t.truth is None else f" (true {t.truth})")
            for t in determined[:10]
        ] + [
            f"{t.where} in {t.interval[0]}..{t.interval[1]} (true {t.truth})"
            for t in narrowed[:10]
            if not t.determined
        ]
        return Report(
            answers=self.answers,
            unknowns=len(self.keys),
            equations=len(self.rows),
            components=len(components),
            largest_component=max((len(m) for m, _ in components), default=0),
            suppressed=len(self.targets),
            determined=len(determined),
            wrong=len(wrong),
            primaries=len(primaries),
            narrowed=len(narrowed),
            smallest_width=min(widths) if widths else None,
            inconsistent=inconsistent,
            unresolved=sum(t.unresolved for t in self.targets.values()),
            lps=lps,
            seconds=time.perf_counter() - started,
            examples=examples,
        )


def settled(target: Target, low: float, high: float, exact: bool) -> bool:
    """Whether the feasible values seen (``low``..``high``) already answer what is asked."""
    if exact:
        return low <= max(target.lo, 0.0) + EPS and high >= target.hi - EPS
    if target.small:
        return high >= target.threshold - 1 - EPS and math.floor(high + EPS) > math.ceil(low - EPS)
    return math.isfinite(low) and math.floor(high + EPS) > math.ceil(low - EPS)


def _floor(value: float) -> float:
    return float(math.floor(value + EPS)) if math.isfinite(value) else value


def _ceil(value: float) -> float:
    return float(math.ceil(value - EPS)) if math.isfinite(value) else value


def _program(rows: Sequence[Row], position: Mapping[int, int], size: int) -> dict[str, Any]:
    """``linprog``'s arguments for rows lo ≤ a·x ≤ hi (equalities where lo = hi)."""
    equal: list[tuple[Mapping[int, float], float]] = []
    eq_b: list[float] = []
    upper: list[tuple[Mapping[int, float], float]] = []
    ub_b: list[float] = []
    for row in rows:
        if abs(row.hi - row.lo) <= EPS:
            equal.append((row.terms, 1.0))
            eq_b.append(row.lo)
            continue
        if math.isfinite(row.hi):
            upper.append((row.terms, 1.0))
            ub_b.append(row.hi)
        if row.lo > -math.inf:
            upper.append((row.terms, -1.0))
            ub_b.append(-row.lo)
    return {
        "A_ub": _sparse(upper, position, size) if ub_b else None,
        "b_ub": np.array(ub_b) if ub_b else None,
        "A_eq": _sparse(equal, position, size) if eq_b else None,
        "b_eq": np.array(eq_b) if eq_b else None,
    }


def _sparse(
    rows: Sequence[tuple[Mapping[int, float], float]], position: Mapping[int, int], size: int
) -> sparse.csr_matrix:
    """The matrix of rows (terms, sign) over the unknowns at ``position``."""
    r: list[int] = []
    c: list[int] = []
    v: list[float] = []
    for k, (terms, sign) in enumerate(rows):
        for i, coef in terms.items():
            r.append(k)
            c.append(position[i])
            v.append(sign * coef)
    return sparse.csr_matrix((v, (r, c)), shape=(len(rows), size))


class _Warm:
    """One component's LP held in HiGHS (the solver ``linprog`` calls) between objectives, so
    that each new objective starts from the last optimal basis instead of from scratch."""

    def __init__(self, core: Any, highs: Any) -> None:
        self.core, self.highs = core, highs

    @classmethod
    def of(
        cls,
        rows: Sequence[Row],
        position: Mapping[int, int],
        size: int,
        bounds: Sequence[tuple[float, float | None]],
    ) -> _Warm | None:
        try:
            from scipy.optimize._highspy import _core as core
        except ImportError:  # another scipy: linprog from scratch each time
            return None
        inf = core.kHighsInf
        matrix = _sparse([(row.terms, 1.0) for row in rows], position, size).tocsc()
        lp = core.HighsLp()
        lp.num_col_ = lp.a_matrix_.num_col_ = size
        lp.num_row_ = lp.a_matrix_.num_row_ = len(rows)
        lp.a_matrix_.format_ = core.MatrixFormat.kColwise
        lp.a_matrix_.start_ = matrix.indptr
        lp.a_matrix_.index_ = matrix.indices
        lp.a_matrix_.value_ = matrix.data
        lp.col_cost_ = np.zeros(size)
        lp.col_lower_ = np.array([lo for lo, _ in bounds], dtype=float)
        lp.col_upper_ = np.array([inf if hi is None else hi for _, hi in bounds], dtype=float)
        lp.row_lower_ = np.array([max(row.lo, -inf) for row in rows], dtype=float)
        lp.row_upper_ = np.array([min(row.hi, inf) for row in rows], dtype=float)
        highs = core._Highs()
        highs.setOptionValue("output_flag", False)
        if highs.passModel(lp) == core.HighsStatus.kError:
            return None
        return cls(core, highs)

    def solve(self, objective: np.ndarray) -> np.ndarray | None:
        """The optimum's point, or None when the objective is unbounded below."""
        n = len(objective)
        self.highs.changeColsCost(n, np.arange(n, dtype=np.int32), objective.astype(float))
        self.highs.run()
        status = self.highs.getModelStatus()
        if status == self.core.HighsModelStatus.kOptimal:
            return np.asarray(self.highs.getSolution().col_value)
        if status in (
            self.core.HighsModelStatus.kUnbounded,
            self.core.HighsModelStatus.kUnboundedOrInfeasible,
        ):
            return None
        raise RuntimeError(f"the attack's LP failed: {self.highs.modelStatusToString(status)}")


class Solver:
    """Presolve (aliases, fixed unknowns, bound tightening), components, and the LPs."""

    def __init__(self, n: int, rows: list[Row]) -> None:
        self.n = n
        self.rows = rows
        self.parent = list(range(n))
        self.lower = np.zeros(n)
        self.upper = np.full(n, math.inf)
        self.component_of: dict[int, int] = {}

    def alias(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def is_fixed(self, i: int) -> bool:
        return bool(self.upper[i] - self.lower[i] <= EPS)

    def _rewrite(self) -> None:
        """Map every row onto representatives, substitute fixed unknowns out, and merge rows
        over the same terms into one (the intersection of their intervals)."""
        merged: dict[frozenset[tuple[int, float]], Row] = {}
        for row in self.rows:
            terms: dict[int, float] = {}
            lo, hi = row.lo, row.hi
            for i, coef in row.terms.items():
                j = self.alias(i)
                if self.is_fixed(j):
                    lo -= coef * self.lower[j]
                    hi -= coef * self.lower[j]
                    continue
                terms[j] = terms.get(j, 0.0) + coef
            terms = {i: c for i, c in terms.items() if abs(c) > EPS}
            if not terms:
                continue
            key = frozenset(terms.items())
            known = merged.get(key)
            if known is None:
                merged[key] = Row(terms, lo, hi)
            else:
                known.lo, known.hi = max(known.lo, lo), min(known.hi, hi)
        self.rows = list(merged.values())

    def presolve(self, rounds: int = 20) -> None:
        """Aliases, then bounds from rows of positive terms, to a fixpoint (or ``rounds``).
        Counts are integers, so every bound found is rounded inwards."""
        for _ in range(rounds):
            changed = False
            for row in self.rows:
                if len(row.terms) == 2 and row.lo == row.hi == 0.0:
                    (a, ca), (b, cb) = row.terms.items()
                    if ca == -cb:
                        ra, rb = self.alias(a), self.alias(b)
                        if ra != rb:
                            self.parent[rb] = ra
                            self.lower[ra] = max(self.lower[ra], self.lower[rb])
                            self.upper[ra] = min(self.upper[ra], self.upper[rb])
                            changed = True
            self._rewrite()
            for row in self.rows:
                positive = all(c > 0 for c in row.terms.values())
                if not positive:
                    continue
                if len(row.terms) == 1:
                    ((i, c),) = row.terms.items()
                    lo, hi = _ceil(row.lo / c), _floor(row.hi / c)
                    if lo > self.lower[i] + EPS:
                        self.lower[i], changed = lo, True
                    if hi < self.upper[i] - EPS:
                        self.upper[i], changed = hi, True
                    continue
                floor_sum = sum(c * self.lower[i] for i, c in row.terms.items())
                endless = sum(1 for i in row.terms if not math.isfinite(self.upper[i]))
                ceiling = sum(
                    c * self.upper[i] for i, c in row.terms.items() if math.isfinite(self.upper[i])
                )
                for i, c in row.terms.items():
                    before = self.upper[i]
                    cap = _floor((row.hi - floor_sum + c * self.lower[i]) / c)
                    if cap < self.upper[i] - EPS:
                        self.upper[i], changed = max(cap, self.lower[i]), True
                    finite = math.isfinite(before)
                    if endless - (0 if finite else 1) == 0:
                        rest = ceiling - (c * before if finite else 0.0)
                        floor = _ceil((row.lo - rest) / c)
                        if floor > self.lower[i] + EPS:
                            self.lower[i], changed = min(floor, self.upper[i]), True
            self._rewrite()
            if not changed:
                break

    def root_of(self, target: Target) -> int | None:
        """The component of a target's free unknowns (one: the target is a row), or None."""
        for i in target.unknowns:
            j = self.alias(i)
            if not self.is_fixed(j):
                return self.component_of.get(j)
        return None

    def fix_by_equalities(self) -> bool:
        """Fix every unknown that the exact equations alone determine (its unit vector lies in
        their row space), at the value they give; answer whether any was fixed."""
        exact = [row for row in self.rows if abs(row.hi - row.lo) <= EPS]
        if not exact:
            return False
        free = sorted({i for row in exact for i in row.terms})
        position = {i: k for k, i in enumerate(free)}
        matrix = _sparse([(row.terms, 1.0) for row in exact], position, len(free))
        rhs = np.array([row.lo for row in exact])
        limit = 50 * (len(exact) + len(free))
        probe = np.random.default_rng(len(free)).standard_normal(len(free))
        dual = lsqr(matrix.T, probe, atol=1e-12, btol=1e-12, iter_lim=limit)[0]
        moves = np.abs(probe - matrix.T @ dual) > 1e-6
        solution = lsqr(matrix, rhs, atol=1e-12, btol=1e-12, iter_lim=limit)[0]
        fixed = False
        for k in np.flatnonzero(~moves):
            value = float(solution[k])
            near = float(round(value))
            i = free[int(k)]
            if abs(value - near) > 1e-4 or near < self.lower[i] - EPS or near > self.upper[i] + EPS:
                continue  # left to the LPs
            self.lower[i] = self.upper[i] = near
            fixed = True
        return fixed

    def components(self) -> list[tuple[np.ndarray, list[Row]]]:
        free = sorted({i for row in self.rows for i in row.terms})
        parent = {i: i for i in free}

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for row in self.rows:
            first, *rest = row.terms
            for other in rest:
                a, b = find(first), find(other)
                if a != b:
                    parent[b] = a
        groups: dict[int, list[int]] = {}
        for i in free:
            groups.setdefault(find(i), []).append(i)
        rows_of: dict[int, list[Row]] = {}
        for row in self.rows:
            rows_of.setdefault(find(next(iter(row.terms))), []).append(row)
        out = []
        for root, members in groups.items():
            ordered = np.array(sorted(members))
            for i in ordered:
                self.component_of[int(i)] = int(ordered[0])
            out.append((ordered, rows_of.get(root, [])))
        return out

    def _offset(self, target: Target) -> tuple[float, dict[int, float]]:
        offset = 0.0
        terms: dict[int, float] = {}
        for i in target.unknowns:
            j = self.alias(i)
            if self.is_fixed(j):
                offset += self.lower[j]
            else:
                terms[j] = terms.get(j, 0.0) + 1.0
        return offset, terms

    def bound_fixed(self, target: Target) -> None:
        offset, terms = self._offset(target)
        low = offset + sum(c * self.lower[i] for i, c in terms.items())
        high = offset + sum(c * self.upper[i] for i, c in terms.items())
        target.low, target.high = low, high

    def bound(
        self,
        targets: list[Target],
        members: np.ndarray,
        rows: list[Row],
        exact: bool,
        deadline: float | None = None,
    ) -> int:
        """Minimise and maximise each target over one component; answer the LPs solved."""
        if not targets:
            return 0
        position = {int(i): k for k, i in enumerate(members)}
        size = len(members)
        bounds = [
            (self.lower[i], None if not math.isfinite(self.upper[i]) else self.upper[i])
            for i in members
        ]
        offsets = np.zeros(len(targets))
        picked: list[tuple[Mapping[int, float], float]] = []
        for k, target in enumerate(targets):
            offsets[k], terms = self._offset(target)
            picked.append((terms, 1.0))
        matrix = _sparse(picked, position, size)  # one row per target over the component
        seen_low = np.full(len(targets), math.inf)
        seen_high = np.full(len(targets), -math.inf)
        lps = 0
        warm = _Warm.of(rows, position, size, bounds)
        program = None if warm is not None else _program(rows, position, size)

        def solve(objective: np.ndarray) -> np.ndarray | None:
            nonlocal lps
            lps += 1
            if warm is not None:
                x = warm.solve(objective)
            else:
                assert program is not None
                found = linprog(objective, **program, bounds=bounds, method="highs")
                if found.status not in (0, 3):
                    raise RuntimeError(f"the attack's LP failed: {found.message}")
                x = None if found.status == 3 else np.asarray(found.x)
            if x is None:
                return None
            values = offsets + matrix @ x
            np.minimum(seen_low, values, out=seen_low)
            np.maximum(seen_high, values, out=seen_high)
            return x

        everything = np.asarray(matrix.sum(axis=0)).ravel()
        rng = np.random.default_rng(len(targets))
        seeds = [everything, -everything] + [
            rng.uniform(-1, 1, size) * (everything > 0) for _ in range(min(6, len(targets) // 10))
        ]
        for objective in seeds:
            solve(objective)
        for k, target in enumerate(targets):
            vector = matrix.getrow(k).toarray().ravel()
            if deadline is not None and time.perf_counter() > deadline:
                if not settled(target, seen_low[k], seen_high[k], exact):
                    target.unresolved = True
                    continue
            if not settled(target, seen_low[k], seen_high[k], exact):
                if seen_low[k] > max(target.lo, 0.0) + EPS:
                    solve(vector)
            if not settled(target, seen_low[k], seen_high[k], exact):
                if solve(-vector) is None:
                    seen_high[k] = math.inf
            target.low, target.high = float(seen_low[k]), float(seen_high[k])
        return lps


# --- building from answers --------------------------------------------------------------------


def attack(
    answers: Iterable[Answer],
    structure: Structure,
    truth: Mapping[Key, int] | None = None,
    use_truth_primaries: bool = True,
    exact: bool = False,
    seconds: float | None = None,
) -> Report:
    """Build the system of ``answers`` and bound each suppressed cell (see ``System.attack``)."""
    answers = list(answers)
    system = System(structure, provider_atoms(answers))
    for answer in answers:
        system.add(answer)
    return system.attack(truth, use_truth_primaries, exact, seconds)


def provider_atoms(answers: Iterable[Answer]) -> dict[str, str]:
    """Provider → the group of providers that every answer counts alike (same grants in each):
    no answer can tell them apart, so the group's sum is one unknown."""
    readings = {
        tuple(sorted(json.dumps(g, sort_keys=True, default=str) for g in a.grants)) for a in answers
    }
    signature: dict[str, list[tuple[Any, ...]]] = {}
    for reading in sorted(readings):
        grants = [Grant.of(json.loads(g)) for g in reading]
        providers = {g.provider for g in grants}
        for provider in providers:
            terms = sorted(
                (sorted(g.fields) if g.fields is not None else None, str(g.start), str(g.end))
                for g in grants
                if g.provider == provider
            )
            signature.setdefault(provider, []).append((reading, json.dumps(terms)))
    groups: dict[str, list[str]] = {}
    for provider, signed in signature.items():
        groups.setdefault(json.dumps(signed), []).append(provider)
    return {p: "+".join(sorted(members)) for members in groups.values() for p in members}


def truth_of(
    records: Iterable[tuple[str, str, str, Mapping[str, str]]],
) -> dict[Key, int]:
    """The true unknowns of (provider, finest area or OUTSIDE, finest period, fields) records."""
    out: dict[Key, int] = {}
    for provider, area, fine, fields in records:
        total: Key = (provider, area, fine, None, None)
        out[total] = out.get(total, 0) + 1
        for dim, value in fields.items():
            key: Key = (provider, area, fine, dim, value)
            out[key] = out.get(key, 0) + 1
    return out


# --- fetching a recipient's answers -----------------------------------------------------------


@dataclass
class View:
    """One way a recipient reads: its headers (key, ``CSP-Purpose``) and the grants that apply."""

    name: str
    headers: dict[str, str]
    grants: list[dict[str, Any]]


def grants_of(client: Any, headers: Mapping[str, str], dataset: str, purpose: str | None) -> list:
    """The grants ``POST /v1/decisions`` names for reading ``dataset`` under ``purpose``."""
    body: dict[str, Any] = {"action": "read", "dataset": dataset, "level": "aggregate"}
    if purpose is not None:
        body["purpose"] = purpose
    answer = client.post("/v1/decisions", json=body, headers=dict(headers))
    assert answer.status_code == 200, answer.text
    return list(answer.json().get("grants") or [])


def layers_of(client: Any, headers: Mapping[str, str]) -> list[str]:
    """Every layer ``GET /v1/geographies`` lists as served."""
    listing = client.get("/v1/geographies", headers=dict(headers))
    assert listing.status_code == 200, listing.text
    return sorted(
        layer["name"]
        for layer in listing.json()["layers"]
        if layer.get("status", "active") == "active"
    )


def query_set(
    first: date,
    last: date,
    singles: Sequence[str] = ("month", "quarter", "year"),
    cuts: bool = True,
    from_cuts: bool = True,
) -> list[dict[str, str]]:
    """The issue's queries over whole months ``first``..``last`` (without layer and ``by``):
    month, quarter and year tables; every single period of ``singles`` as a range; years cut
    short at the 28th of each month but the last (``to``), and from the 10th of each month but
    the first (``from``)."""
    span = {"from": first.isoformat(), "to": last.isoformat()}
    out = [{"period": p, **span} for p in ("month", "quarter", "year")]
    months = []
    day = first
    while day <= last:
        months.append(day)
        day = _month_start(day.year, day.month + 1)
    for period in singles:
        for label in sorted({_label(m, period) for m in months}):
            start, end = label_span(label)
            start, end = max(start, first), min(end, last)
            out.append({"period": period, "from": start.isoformat(), "to": end.isoformat()})
    for month in months:
        year_start, year_end = (
            max(date(month.year, 1, 1), first),
            min(date(month.year, 12, 31), last),
        )
        if cuts and month.month < 12 and month < months[-1]:
            out.append(
                {"period": "year", "from": year_start.isoformat(), "to": f"{month:%Y-%m}-28"}
            )
        if from_cuts and month.month > 1 and month > months[0]:
            out.append({"period": "year", "from": f"{month:%Y-%m}-10", "to": year_end.isoformat()})
    return out


def _label(day: date, period: str) -> str:
    if period == "year":
        return str(day.year)
    if period == "quarter":
        return f"{day.year}-Q{(day.month - 1) // 3 + 1}"
    return f"{day.year}-{day.month:02d}"


def fetch_answers(
    client: Any,
    dataset: str,
    views: Sequence[View],
    layers: Sequence[str],
    queries: Sequence[Mapping[str, str]],
    by: Sequence[str | None] = (None, "category"),
) -> list[Answer]:
    """Every query × layer × ``by`` × view; a 422 (a refused range) contributes nothing."""
    out = []
    for view in views:
        for layer in layers:
            for breakdown in by:
                for query in queries:
                    params = {**query, "geography": layer}
                    if breakdown:
                        params["by"] = breakdown
                    answer = client.get(
                        f"/v1/datasets/{dataset}/aggregates", params=params, headers=view.headers
                    )
                    if answer.status_code == 422:
                        continue
                    assert answer.status_code == 200, (params, answer.text)
                    out.append(Answer(params, view.grants, answer.json()))
    return out
