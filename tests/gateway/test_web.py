"""The analysts' page files on the gateway: only named files, Leaflet from the installed npm
package, a same-origin Content-Security-Policy, and the report route proxied to ingest."""

from __future__ import annotations

from pathlib import Path

from services.gateway import routing
from tests.gateway.conftest import Hub, MakeHub


async def test_the_page_and_its_files_carry_a_same_origin_policy(hub: Hub) -> None:
    page = await hub.client.get("/app/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="app.js">' in page.text and "vendor/leaflet.js" in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy and "unsafe" not in policy and "http" not in policy
    assert page.headers["x-frame-options"] == "DENY"
    for name, kind in (("app.js", "javascript"), ("app.css", "text/css")):
        answer = await hub.client.get(f"/app/{name}")
        assert answer.status_code == 200 and kind in answer.headers["content-type"]
    redirect = await hub.client.get("/app")
    assert redirect.status_code == 308 and redirect.headers["location"] == "/app/"
    # The API keeps its own, stricter policy.
    api = await hub.client.get("/v1/me")
    assert api.headers["content-security-policy"].startswith("default-src 'none'")


async def test_only_named_files_are_served(hub: Hub) -> None:
    for path in ("/app/index.html.bak", "/app/..%2fweb.py", "/app/vendor/../../settings.py",
                 "/app/vendor/leaflet-src.js", "/app/package.json"):  # fmt: skip
        answer = await hub.client.get(path)
        assert answer.status_code == 404, path
        assert answer.headers["content-type"] == "application/problem+json"


async def test_leaflet_comes_from_the_installed_package(make_hub: MakeHub, tmp_path: Path) -> None:
    dist = tmp_path / "leaflet" / "dist"
    dist.mkdir(parents=True)
    (dist / "leaflet.js").write_text("/* leaflet as npm installed it */")
    hub = await make_hub(web_vendor_dir=str(tmp_path))
    answer = await hub.client.get("/app/vendor/leaflet.js")
    assert answer.status_code == 200 and answer.text == "/* leaflet as npm installed it */"
    missing = await hub.client.get("/app/vendor/leaflet.css")
    assert missing.status_code == 404 and "make web" in missing.json()["detail"]


def test_the_report_route_goes_to_ingest_without_a_decision() -> None:
    found = routing.match("GET", "/v1/reports/partnership")
    assert found is not None
    assert found.route.backend == routing.INGEST and found.route.action is None
    assert not found.route.admin_only  # an agency sees its own rows
