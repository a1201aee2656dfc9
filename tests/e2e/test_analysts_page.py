"""The analysts' page at /app/ in a real browser (Debian's chromium driven by Playwright) against
the four services as real processes, seeded with the demo: what it draws is what the API says.

Skips when chromium or the page's npm packages (``make web``) are missing; fails under CI=true.
Screenshots go to var/screenshots/.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts.demo import DEMO_LAYER, seed
from scripts.hub import Hub
from scripts.synthetic_cohort import NEEDS, generate
from services.depersonalise.demo import demo_layer
from services.gateway.settings import REPO, Settings
from tests.e2e.conftest import (
    ADMIN_KEY,
    agree,
    agreement_terms,
    bearer,
    register_agencies,
    wait_depersonalised,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.browser]

SCREENSHOTS = REPO / "var" / "screenshots"
AXE = REPO / "build" / "web" / "node_modules" / "axe-core" / "axe.min.js"
LEAFLET = Path(Settings.model_fields["web_vendor_dir"].default) / "leaflet" / "dist" / "leaflet.js"
BIG_LAYER = "grid-300"
QUERY = {"geography": DEMO_LAYER, "period": "quarter", "from": "2024-01-01", "to": "2024-06-30"}


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI must have it: .ci/run installs it)")
    pytest.skip(reason)


def _chromium() -> str:
    found = os.environ.get("CSP_CHROMIUM") or shutil.which("chromium")
    if not found:
        _missing("chromium is not installed (apt-get install chromium)")
    if not LEAFLET.is_file() or not AXE.is_file():
        _missing("the page's npm packages are not installed (make web)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("playwright is not installed (make venv)")
    return str(found)


@pytest.fixture(scope="module")
def demo(hub: Hub) -> dict[str, str]:
    """The demo seed, a 300-area layer, and an agency with a key but no agreement."""
    keys = seed(hub.gateway_url, ADMIN_KEY)
    admin = bearer(ADMIN_KEY)
    with httpx.Client(base_url=hub.gateway_url, timeout=60) as client:
        big = demo_layer(columns=20, rows=15, size_metres=300.0)
        loaded = client.post(
            f"/v1/geographies/{BIG_LAYER}",
            params={"code_field": "code", "name_field": "name"},
            json=big,
            headers=admin,
        )
        assert loaded.status_code < 300, loaded.text
        outsider = {"code": "demo-housing", "name": "Demo Housing (demo data)", "kind": "housing"}
        assert client.post("/v1/agencies", json=outsider, headers=admin).status_code == 201
        issued = client.post("/v1/agencies/demo-housing/keys", headers=admin).json()
        keys["demo-housing"] = issued["key"]
        council = bearer(keys["demo-council"])
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            layers = client.get("/v1/geographies", headers=council).json()["layers"]
            ready = {layer["name"] for layer in layers if layer.get("status", "active") == "active"}
            answer = client.get(
                "/v1/datasets/police-crime/aggregates", params=QUERY, headers=council
            )
            # seed() waited for the demo's batch; the big layer is served once its rebuild has
            # replayed every record (the total itself is not published beside a suppressed cell).
            if BIG_LAYER in ready and answer.is_success:
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the demo was not depersonalised in time")
    return keys


COHORT_PROVIDERS = {
    "offender-cohort": "cohort-probation",
    "oasys-assessment": "cohort-probation",
    "offender-offence": "cohort-force",
}
COHORT_RANGE = {"from": "2023-01-01", "to": "2024-12-31"}


@pytest.fixture(scope="module")
def cohort(hub: Hub, demo: dict[str, str]) -> dict[str, str]:
    """A synthetic PPO cohort, assessments and offences shared with the demo council at level
    aggregate (drug treatment is not: the page shows that part's refusal)."""
    made = generate(people=150, cohort=40, seed=21)
    keys: dict[str, str] = {}
    with httpx.Client(base_url=hub.gateway_url, timeout=120) as client:
        agencies = (("cohort-probation", "probation"), ("cohort-force", "police"))
        keys = register_agencies(client, agencies, lambda code: f"{code} (synthetic)")
        terms = agreement_terms(
            "IOM cohort profile for the council",
            "integrated-offender-management",
            ["cohort-probation", "cohort-force"],
            ["demo-council"],
            [{"dataset": d, "level": "aggregate"} for d in COHORT_PROVIDERS],
            legal_basis=("cda-1998-s115", "uk-gdpr-6-1-e", "dpa-2018-part-3"),
            start="2020-01-01",
        )
        agree(client, terms, (*keys.values(), demo["demo-council"]))
        for dataset, provider in COHORT_PROVIDERS.items():
            rows = made.records[dataset]
            pushed = client.post(
                f"/v1/datasets/{dataset}/records",
                json={"records": rows},
                headers=bearer(keys[provider]),
            )
            assert pushed.status_code == 202 and pushed.json()["rejected"] == 0, pushed.text
            wait_depersonalised(client, pushed.json()["batch_id"], keys[provider], len(rows))
    return keys


def _cohort_api(hub: Hub, key: str, dataset: str, **params: Any) -> dict[str, Any]:
    answer = httpx.get(
        f"{hub.gateway_url}/v1/datasets/{dataset}/aggregates",
        params={"cohort": "PPO", **params},
        headers=bearer(key),
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _shown(cell: dict[str, Any]) -> str:
    return "suppressed" if cell["count"] is None or cell.get("suppressed") else str(cell["count"])


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


class Page:
    """One browser tab on the page, recording every request it makes."""

    def __init__(self, browser: Any, base: str, width: int, height: int, **options: Any) -> None:
        self.context = browser.new_context(
            viewport={"width": width, "height": height}, accept_downloads=True, **options
        )
        self.tab = self.context.new_page()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.tab.on("request", lambda request: self.requests.append(request.url))
        self.tab.on("pageerror", lambda error: self.errors.append(str(error)))
        self.base = base

    def sign_in(self, key: str) -> None:
        self.tab.goto(self.base + "/app/")
        self.tab.fill("#key", key)
        self.tab.press("#key", "Enter")  # the keyboard alone signs in

    def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.tab.screenshot(path=str(SCREENSHOTS / name), full_page=True)

    def close(self) -> None:
        assert self.errors == [], self.errors
        outside = [
            url for url in self.requests if not url.startswith((self.base, "data:", "blob:"))
        ]
        assert outside == [], f"requests to other hosts: {outside}"
        self.context.close()


@pytest.fixture
def open_page(browser: Any, hub: Hub) -> Iterator[Any]:
    opened: list[Page] = []

    def make(width: int = 1280, height: int = 800, **options: Any) -> Page:
        page = Page(browser, hub.gateway_url, width, height, **options)
        opened.append(page)
        return page

    yield make
    for page in opened:
        page.close()


def _api_geojson(hub: Hub, key: str, layer: str = DEMO_LAYER) -> dict[str, Any]:
    answer = httpx.get(
        hub.gateway_url + "/v1/datasets/police-crime/aggregates",
        params={**QUERY, "geography": layer, "format": "geojson"},
        headers=bearer(key),
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_the_map_draws_what_the_api_answers(
    hub: Hub, demo: dict[str, str], open_page: Any, tmp_path: Path
) -> None:
    key = demo["demo-council"]
    api = _api_geojson(hub, key)
    first = sorted({c["period"] for f in api["features"] for c in f["properties"]["cells"]})[0]
    suppressed = [
        f for f in api["features"] if next(c for c in f["properties"]["cells"]
                                           if c["period"] == first)["count"] is None
    ]  # fmt: skip
    assert 0 < len(suppressed) < len(api["features"])  # the demo has both kinds

    page = open_page()
    tab = page.tab
    page.sign_in(key)
    tab.wait_for_selector("path.area", timeout=30_000)
    assert tab.locator("path.area").count() == len(api["features"])
    hatched = tab.locator("path.area-suppressed")
    assert hatched.count() == len(suppressed)
    assert {hatched.nth(i).get_attribute("fill") for i in range(hatched.count())} == {"url(#hatch)"}
    assert sorted(
        hatched.nth(i).get_attribute("data-area") for i in range(hatched.count())
    ) == sorted(f["properties"]["area"] for f in suppressed)
    # Never drawn as zero: a suppressed area says so, in its data and in the table.
    assert tab.locator('path.area-suppressed[data-count="0"]').count() == 0
    legend = tab.locator('#legend li[data-legend="suppressed"]')
    assert legend.get_attribute("data-areas") == str(len(suppressed))
    assert "suppressed" in legend.inner_text()
    legend_total = sum(
        int(tab.locator("#legend li").nth(i).get_attribute("data-areas") or 0)
        for i in range(tab.locator("#legend li").count())
    )
    assert legend_total == len(api["features"])
    for name, value in api["disclosure"].items():
        if isinstance(value, int | float):
            assert tab.locator(f'#disclosure dd[data-key="{name}"]').inner_text() == str(value)
    table_cells = sum(len(f["properties"]["cells"]) for f in api["features"])
    assert tab.locator("#cells tbody tr").count() == table_cells
    assert float(tab.locator("#map").get_attribute("data-draw-ms") or "inf") < 1000

    # The time series of a chosen area (by keyboard: the area list), one bar per period,
    # suppressed periods labelled as such.
    periods = sorted({c["period"] for f in api["features"] for c in f["properties"]["cells"]})
    area = suppressed[0]["properties"]["area"]
    tab.select_option("#series-area", area)
    assert tab.locator("#series rect.bar, #series rect.bar-suppressed").count() == len(periods)
    assert "suppressed" in (tab.locator("#series svg").text_content() or "")

    with tab.expect_download() as download:
        tab.click("#download-csv")
    saved = tmp_path / "cells.csv"
    download.value.save_as(saved)
    rows = list(csv.DictReader(io.StringIO(saved.read_text())))
    assert len(rows) == table_cells
    assert sum(1 for r in rows if r["count"] == "") == sum(
        1 for f in api["features"] for c in f["properties"]["cells"] if c["count"] is None
    )
    page.shot("map-1280x800.png")
    # The key is in the tab's session storage, never in an address.
    assert all(demo["demo-council"] not in url for url in page.requests)


def test_no_serious_accessibility_violation(
    hub: Hub, demo: dict[str, str], cohort: dict[str, str], open_page: Any
) -> None:
    # axe-core is injected as a script, which the page's own policy rightly forbids.
    page = open_page(bypass_csp=True)
    page.sign_in(demo["demo-council"])
    page.tab.wait_for_selector("path.area", timeout=30_000)
    page.tab.click("#report-form button[type=submit]")
    page.tab.wait_for_selector("#report table")
    page.tab.click("#cohort-form button[type=submit]")
    page.tab.wait_for_selector('#cohort [data-part="needs"] table', timeout=60_000)
    page.tab.add_script_tag(path=str(AXE))
    result = page.tab.evaluate("async () => await axe.run(document)")
    serious = [
        (v["id"], v["impact"], len(v["nodes"]))
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert serious == []


def test_a_phone_width_shows_the_map_without_sideways_scrolling(
    hub: Hub, demo: dict[str, str], open_page: Any
) -> None:
    page = open_page(390, 844)
    page.sign_in(demo["demo-council"])
    page.tab.wait_for_selector("path.area", timeout=30_000)
    assert page.tab.locator("#map").bounding_box()["width"] <= 390
    width = page.tab.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    page.shot("map-phone.png")


def test_a_key_without_an_agreement_sees_the_refusal_and_its_rule(
    demo: dict[str, str], open_page: Any
) -> None:
    page = open_page()
    page.sign_in(demo["demo-housing"])
    alert = page.tab.locator("#problem")
    alert.wait_for(state="visible", timeout=30_000)
    assert "no-active-agreement" in alert.locator(".rule").inner_text()
    assert alert.locator(".detail").inner_text().startswith("Refused by rule")
    assert page.tab.locator("path.area").count() == 0
    page.shot("refusal.png")


def test_a_300_area_layer_is_drawn_within_a_second(
    hub: Hub, demo: dict[str, str], open_page: Any
) -> None:
    page = open_page()
    tab = page.tab
    page.sign_in(demo["demo-council"])
    tab.wait_for_selector("path.area", timeout=30_000)
    tab.select_option("#layer", BIG_LAYER)
    tab.click("#query button[type=submit]")
    tab.wait_for_selector('#map[data-areas="300"]', timeout=30_000)
    assert tab.locator("path.area").count() == 300
    assert float(tab.locator("#map").get_attribute("data-draw-ms") or "inf") < 1000


def test_published_points_show_their_k(demo: dict[str, str], open_page: Any) -> None:
    page = open_page()
    tab = page.tab
    page.sign_in(demo["demo-council"])
    tab.wait_for_selector("path.area", timeout=30_000)
    tab.click("#points")
    tab.wait_for_selector("path.record-point", timeout=30_000)
    assert tab.locator("#points-status").get_attribute("data-k") == "8"
    assert "k = 8" in tab.locator("#points-status").inner_text()
    page.shot("points.png")


def test_the_report_and_agreements_due_for_review(demo: dict[str, str], open_page: Any) -> None:
    page = open_page()
    tab = page.tab
    # The provider: the report shows its own rows.
    page.sign_in(demo["demo-police"])
    tab.locator("#workspace").wait_for(state="visible", timeout=30_000)
    tab.fill("#quarter", "2024-Q1")
    tab.click("#report-form button[type=submit]")
    first_table = tab.locator("#report table").first
    first_table.wait_for()
    assert "demo-police" in first_table.inner_text() and "185" in first_table.inner_text()
    assert "None due" in tab.locator("#review-due").inner_text()
    with tab.expect_download() as download:
        tab.click("#download-report-html")
    printable = Path(download.value.path()).read_text()
    assert "<h1>Partnership information-sharing report, 2024-Q1</h1>" in printable
    assert "<td>185</td>" in printable
    page.shot("report.png")
    tab.fill("#quarter", "2024-Q7")
    tab.click("#report-form button[type=submit]")
    tab.locator("#problem").wait_for(state="visible")
    tab.wait_for_function("document.querySelector('#problem').innerText.includes('quarter')")


def test_map_areas_are_tab_stops_announced_and_chosen_with_enter(
    hub: Hub, demo: dict[str, str], open_page: Any
) -> None:
    key = demo["demo-council"]
    api = _api_geojson(hub, key)
    first = sorted({c["period"] for f in api["features"] for c in f["properties"]["cells"]})[0]
    by_area = {
        f["properties"]["area"]: (
            f["properties"]["area_name"],
            _shown(next(c for c in f["properties"]["cells"] if c["period"] == first)),
        )
        for f in api["features"]
    }
    page = open_page()
    tab = page.tab
    page.sign_in(key)
    tab.wait_for_selector("path.area", timeout=30_000)
    focused = ""
    for _ in range(60):  # the keyboard alone reaches the map's areas
        tab.keyboard.press("Tab")
        focused = tab.evaluate("document.activeElement.getAttribute('data-area') || ''")
        if focused:
            break
    assert focused in by_area, "no map area is reachable with Tab"
    name, shown = by_area[focused]
    label = tab.evaluate("document.activeElement.getAttribute('aria-label')")
    assert name in label and f"{first}: {shown}" in label
    assert tab.evaluate("document.activeElement.getAttribute('role')") == "button"
    # Enter chooses the area for the time series (a suppressed one says so, never zero)
    tab.keyboard.press("Enter")
    assert tab.locator("#series-area").input_value() == focused
    assert name in tab.locator("#series-summary").inner_text()
    title = tab.locator("#series svg title").text_content() or ""
    assert name in title
    tab.keyboard.press("Tab")
    following = tab.evaluate("document.activeElement.getAttribute('data-area') || ''")
    assert following in by_area and following != focused  # each area its own tab stop
    tab.keyboard.press(" ")
    assert tab.locator("#series-area").input_value() == following
    page.shot("map-keyboard-1280x800.png")


@pytest.mark.parametrize("width,height", [(1280, 800), (390, 844)])
def test_the_cohort_profile_shows_what_the_api_answers(
    hub: Hub, demo: dict[str, str], cohort: dict[str, str], open_page: Any, width: int, height: int
) -> None:
    key = demo["demo-council"]
    size = _cohort_api(
        hub, key, "offender-cohort", count="people", period="quarter", **COHORT_RANGE
    )
    offences = _cohort_api(hub, key, "offender-offence", relative="joined", period="month")
    needs = {
        need: _cohort_api(
            hub, key, "oasys-assessment", count="people", period="year", by=need, **COHORT_RANGE
        )
        for need in NEEDS
    }
    assert any(_shown(c) == "suppressed" for c in size["cells"] + offences["cells"])
    page = open_page(width, height)
    tab = page.tab
    page.sign_in(key)
    tab.locator("#workspace").wait_for(state="visible", timeout=30_000)
    tab.click("#cohort-form button[type=submit]")
    tab.wait_for_selector('#cohort [data-part="needs"] table', timeout=60_000)

    def shown(part: str) -> list[str]:
        rows = tab.locator(f'#cohort [data-part="{part}"] tbody tr')
        return [rows.nth(i).get_attribute("data-count") or "" for i in range(rows.count())]

    # every cell as the API gives it; suppressed ones say so and are never 0
    assert shown("size") == [_shown(c) for c in size["cells"]]
    assert shown("reoffending") == [_shown(c) for c in offences["cells"]]
    assert len(shown("reoffending")) == 25  # months -12 … 12 around joining
    assert shown("needs") == [_shown(c) for need in NEEDS for c in needs[need]["cells"]]
    parts = ("size", "reoffending", "needs")
    assert any(
        "suppressed" in tab.locator(f'#cohort [data-part="{p}"]').inner_text() for p in parts
    )
    for part, answer in (("size", size), ("reoffending", offences)):
        perturbation = (answer["rule"] or {}).get("perturbation")
        note = tab.locator(f'#cohort [data-part="{part}"] .perturbation')
        if perturbation:
            assert note.get_attribute("data-perturbation") == str(perturbation["max"])
        else:
            assert note.count() == 0
    # drug treatment is not granted to the council: that part shows the refusal and its rule
    refused = tab.locator('#cohort [data-part="substance"] .part-problem')
    assert refused.count() == 1 and "Rule:" in refused.inner_text()
    assert tab.locator('#cohort [data-part="substance"] table').count() == 0
    assert tab.evaluate("document.documentElement.scrollWidth") <= width
    page.shot(f"cohort-{width}x{height}.png")
    # an unknown strand: the problem detail naming it, nothing drawn
    tab.fill("#strand", "NOPE")
    tab.click("#cohort-form button[type=submit]")
    alert = tab.locator("#problem")
    alert.wait_for(state="visible", timeout=30_000)
    assert "NOPE" in alert.inner_text()
    assert tab.locator("#cohort table").count() == 0
