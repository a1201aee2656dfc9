"""An in-memory stand-in for the gateway, served through ``httpx.MockTransport``.

It keeps what the CLI relies on: bearer keys, problem+json errors, Idempotency-Key replay,
records keyed by ``source_ref``, cursor pages, streamed bodies.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from typing import Any
from urllib.parse import parse_qs

import httpx

KEY = "csp_test_key_for_the_fake_gateway"


def problem(status: int, detail: str, **extra: Any) -> httpx.Response:
    body = {"type": "urn:csp-hub:problem:x", "title": "t", "status": status, "detail": detail}
    return httpx.Response(
        status, json={**body, **extra}, headers={"content-type": "application/problem+json"}
    )


class FakeGateway:
    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.idempotent: dict[str, tuple[str, dict[str, Any]]] = {}
        self.push_calls: list[httpx.Request] = []
        self.stored_rows = 0
        self.fail_from_push: int | None = None  # connection drops from this push call on
        self.transient_503 = 0
        self.requests: list[httpx.Request] = []
        self.uploads: list[tuple[str, dict[str, list[str]], bytes, str]] = []
        self.postcode_bodies: list[str] = []
        self.layer_polls = 0  # status polls answered so far; served after the third
        self.agencies: list[dict[str, Any]] = [
            {"code": f"agency-{i}", "name": f"Agency {i}", "kind": "police"} for i in range(3)
        ]
        self.audit_ok = True
        self.batches = 0

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return problem(401, "A valid API key is required.")
        path = request.url.path
        method = request.method
        if method == "POST" and path.startswith("/v1/datasets/") and path.endswith("/records"):
            return self.push(request, path.split("/")[3])
        if method == "GET" and path.startswith("/v1/batches/"):
            return httpx.Response(
                200,
                json={
                    "batch_id": path.rsplit("/", 1)[1],
                    "dataset": "police-crime",
                    "status": "done",
                    "received": 3,
                    "accepted": 2,
                    "rejected": 1,
                    "delivered": 2,
                    "depersonalised": 2,
                },
            )
        if method == "GET" and path.endswith("/aggregates"):
            params = dict(request.url.params)
            if params.get("geography") == "nope":
                return problem(403, "No agreement allows this.", rule="no-active-agreement")
            return httpx.Response(
                200, text="area,period,count\nE01000001,2024-01,12\n" + json.dumps(params)
            )
        if method == "GET" and path.endswith("/quality"):
            return httpx.Response(200, json={"dataset": path.split("/")[3], "late": 1})
        if method == "GET" and path == "/v1/datasets":
            return httpx.Response(200, json=[{"name": "police-crime", "title": "Police crime"}])
        if path.startswith(("/v1/populations/", "/v1/snap-layers/")) and method == "POST":
            body = request.read()
            self.uploads.append(
                (path, parse_qs(request.url.query.decode()), body, request.headers["content-type"])
            )
            return httpx.Response(201, json={"matched": 2, "areas": 2, "points": 1})
        if path == "/v1/reconcile":
            pair = {"dataset": "police-crime", "provider": "gmp", "raw": 5, "derived": 4}
            return httpx.Response(
                200,
                json={
                    "state": "complete",
                    "pairs": [{**pair, "agreed": False, "redelivered": 1, "removed": 0}],
                    "lag_records": 1 if method == "POST" else 0,
                },
            )
        if path.startswith("/v1/geographies/") and method == "POST":
            body = request.read()
            self.uploads.append(
                (path, parse_qs(request.url.query.decode()), body, request.headers["content-type"])
            )
            name = path.rsplit("/", 1)[1]
            return httpx.Response(
                202,
                json={"layer": name, "areas": 2, "status": "pending", "progress": 0.0},
                headers={"Location": f"/v1/geographies/{name}/status"},
            )
        if path.startswith("/v1/geographies/") and path.endswith("/status"):
            self.layer_polls += 1
            served = self.layer_polls >= 3
            return httpx.Response(
                200,
                json={
                    "name": path.split("/")[3],
                    "status": "active" if served else "pending",
                    "progress": 1.0 if served else self.layer_polls / 3,
                    "rebuild": {"state": "complete" if served else "running"},
                },
            )
        if path == "/v1/postcodes" and method == "POST":
            text = request.read().decode()
            self.postcode_bodies.append(text)
            return httpx.Response(200, json={"loaded": len(text.strip().splitlines()) - 1})
        if path == "/v1/audit/verify":
            if self.audit_ok:
                return httpx.Response(200, json={"ok": True, "entries": 7, "head": "ab" * 32})
            return httpx.Response(
                200, json={"ok": False, "first_bad_entry": 4, "reason": "hash mismatch"}
            )
        if path == "/v1/audit/checkpoints":
            return httpx.Response(200, json={"checkpoints": [], "public_keys": {}, "next": None})
        if path == "/v1/audit/export":
            return httpx.Response(200, text='{"seq": 1}\n{"seq": 2}\n')
        if path == "/v1/agencies" and method == "GET":
            start = int(request.url.params.get("cursor") or 0)
            page = self.agencies[start : start + 2]
            following = str(start + 2) if start + 2 < len(self.agencies) else None
            return httpx.Response(200, json={"items": page, "next_cursor": following})
        if path == "/v1/agencies" and method == "POST":
            body = json.loads(request.read())
            self.agencies.append(body)
            return httpx.Response(201, json=body)
        if path.startswith("/v1/agencies/") and path.endswith("/keys") and method == "POST":
            return httpx.Response(201, json={"key_id": "k1", "key": "csp_new_secret"})
        if path.startswith("/v1/agencies/") and method == "DELETE":
            return httpx.Response(204)
        if path == "/v1/agreements" and method == "POST":
            return httpx.Response(
                201, json={**json.loads(request.read()), "id": "agr-1", "status": "draft"}
            )
        if path == "/v1/agreements" and method == "GET":
            return httpx.Response(200, json=[{"id": "agr-1", "title": "T", "status": "active"}])
        if path.startswith("/v1/agreements/") and method == "POST":
            action = path.rsplit("/", 1)[1]
            status = {"sign": "active", "suspend": "suspended", "revoke": "revoked"}[action]
            return httpx.Response(200, json={"id": path.split("/")[3], "status": status})
        return problem(404, f"no route {method} {path}")

    def push(self, request: httpx.Request, dataset: str) -> httpx.Response:
        body = request.read()
        key = request.headers.get("idempotency-key")
        digest = hashlib.sha256(body).hexdigest()
        if key and key in self.idempotent:
            first_digest, answer = self.idempotent[key]
            if first_digest != digest:
                return problem(422, "Idempotency-Key reused with another body.")
            return httpx.Response(202, json=answer)
        if self.transient_503:
            self.transient_503 -= 1
            return problem(503, "backend down", headers=None)
        self.push_calls.append(request)
        if self.fail_from_push is not None and len(self.push_calls) > self.fail_from_push:
            raise httpx.ConnectError("connection dropped", request=request)
        if request.headers["content-type"].startswith("text/csv"):
            rows = list(csv.DictReader(io.StringIO(body.decode())))
        else:
            rows = json.loads(body)["records"]
        errors = []
        accepted = 0
        for number, row in enumerate(rows, start=1):
            if not row.get("occurred_at"):
                errors.append({"row": number, "field": "occurred_at", "message": "required"})
                continue
            self.records[f"{dataset}/{row['source_ref']}"] = dict(row)
            self.stored_rows += 1
            accepted += 1
        self.batches += 1
        answer = {
            "batch_id": f"b{self.batches}",
            "received": len(rows),
            "accepted": accepted,
            "rejected": len(errors),
            "errors": errors,
        }
        if key:
            self.idempotent[key] = (digest, answer)
        return httpx.Response(202, json=answer)
