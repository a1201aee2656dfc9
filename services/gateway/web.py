"""The analysts' page at ``/app/``: static files that work only through the public API.

The page's own files live beside this module (``web/``); Leaflet comes from the npm registry,
installed by ``make web`` (or the image build) into ``Settings.web_vendor_dir``, never committed.
Only named files are served, so no path from the request reaches the file system. It serves
routes, so it imports FastAPI; it decides nothing about the API.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from services.gateway.deps import SettingsDep
from shared.errors import ProblemError

PAGE_DIR = Path(__file__).parent / "web"
PAGE_FILES = {"": "index.html", "app.js": "app.js", "app.css": "app.css"}
# Leaflet's distribution files the page loads (images: the layer control's and markers' icons).
VENDOR_FILES = {
    "leaflet.js": "leaflet/dist/leaflet.js",
    "leaflet.css": "leaflet/dist/leaflet.css",
    "images/layers.png": "leaflet/dist/images/layers.png",
    "images/layers-2x.png": "leaflet/dist/images/layers-2x.png",
    "images/marker-icon.png": "leaflet/dist/images/marker-icon.png",
    "images/marker-icon-2x.png": "leaflet/dist/images/marker-icon-2x.png",
    "images/marker-shadow.png": "leaflet/dist/images/marker-shadow.png",
}
router = APIRouter(include_in_schema=False)


@router.get("/app")
async def app_root() -> RedirectResponse:
    return RedirectResponse("/app/", status_code=308)


@router.get("/app/vendor/{name:path}")
async def vendor_file(name: str, settings: SettingsDep) -> FileResponse:
    relative = VENDOR_FILES.get(name)
    path = Path(settings.web_vendor_dir) / relative if relative else None
    if path is None or not path.is_file():
        raise ProblemError(
            404,
            "Not found (the page's map library is installed by `make web`).",
            slug="not-found",
        )
    return FileResponse(path)


@router.get("/app/{name}")
@router.get("/app/", name="app_index")
async def page_file(name: str = "") -> FileResponse:
    file = PAGE_FILES.get(name)
    if file is None:
        raise ProblemError(404, "Not found.", slug="not-found")
    return FileResponse(PAGE_DIR / file)
