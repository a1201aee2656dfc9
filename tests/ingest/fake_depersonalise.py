"""A stand-in for depersonalise's ``POST /internal/events``: keeps the newest revision per record
and every event id it was sent. Runs in-process (ASGI) or as a process:
``python -m tests.ingest.fake_depersonalise PORT LOGFILE`` (event ids appended to LOGFILE)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request


def build_receiver(log_file: Path | None = None) -> FastAPI:
    app = FastAPI()
    app.state.events = []
    app.state.current = {}
    app.state.fail = False

    @app.post("/internal/events")
    async def events(request: Request) -> Any:
        if app.state.fail:
            from fastapi.responses import JSONResponse

            return JSONResponse({"detail": "down"}, status_code=503)
        assert request.headers.get("CSP-Internal-Token")
        body = await request.json()
        results = []
        for event in body["events"]:
            app.state.events.append(event)
            held = app.state.current.get(event["record_key"])
            if held is not None and held["revision"] == event["revision"]:
                status = "stored" if event["op"] == "upsert" else "deleted"
            elif held is not None and held["revision"] > event["revision"]:
                status = "stale"
            else:
                app.state.current[event["record_key"]] = event
                status = "stored" if event["op"] == "upsert" else "deleted"
            results.append({"event_id": event["event_id"], "status": status})
        if log_file is not None:
            with log_file.open("a") as handle:
                handle.write("".join(f"{e['event_id']} {e['op']}\n" for e in body["events"]))
        stored = sum(r["status"] in ("stored", "deleted") for r in results)
        return {"results": results, "depersonalised": stored}

    return app


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(
        build_receiver(Path(sys.argv[2])),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
    )
