"""The ``csp`` command. The API key comes from ``CSP_API_KEY`` or the config file, never a flag.

One file (some 690 lines) on purpose: it is the command table, each command a few lines that call
the gateway and print, so ``csp --help`` reads top to bottom here; the work is in ``gateway``,
``upload``, ``chunks`` and ``witness``."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from csp_cli import witness
from csp_cli.chunks import FileFormat, detect_format
from csp_cli.config import ConfigError, config_path, load_config
from csp_cli.gateway import Gateway, GatewayError
from csp_cli.upload import push_file

POLL_SECONDS = 1.0

app = typer.Typer(help="Client of a CSP information-sharing hub.", no_args_is_help=True)
agencies_app = typer.Typer(help="Agencies (operators).", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of agencies (operators).", no_args_is_help=True)
agreements_app = typer.Typer(help="Information sharing agreements.", no_args_is_help=True)
geographies_app = typer.Typer(help="Geography layers (loading: operators).", no_args_is_help=True)
postcodes_app = typer.Typer(help="Postcode centroids (operators).", no_args_is_help=True)
audit_app = typer.Typer(help="The audit chain.", no_args_is_help=True)
snap_app = typer.Typer(
    help="Snap layers of anonymous map points (operators).", no_args_is_help=True
)
for sub, name in (
    (agencies_app, "agencies"),
    (keys_app, "keys"),
    (agreements_app, "agreements"),
    (geographies_app, "geographies"),
    (postcodes_app, "postcodes"),
    (audit_app, "audit"),
    (snap_app, "snap-layers"),
):
    app.add_typer(sub, name=name)

out = Console()
err = Console(stderr=True)
# Tests hand the gateway client a fake transport (and no back-off) through this.
gateway_options: dict[str, Any] = {}
UPLOAD_BLOCK = 1 << 20


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[
        str | None, typer.Option(help="gateway URL (else CSP_URL, the config file, or localhost)")
    ] = None,
) -> None:
    ctx.obj = url


def _gateway(ctx: typer.Context) -> Gateway:
    try:
        config = load_config(ctx.find_root().obj)
    except ConfigError as exc:
        _fail(str(exc))
    if not config.api_key:
        _fail(f"no API key: set CSP_API_KEY or api_key in {config_path()} (mode 600)")
    gateway = Gateway(config, **gateway_options)
    ctx.call_on_close(gateway.close)
    return gateway


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def _call(ctx: typer.Context, method: str, *args: Any, **kwargs: Any) -> Any:
    try:
        return getattr(_gateway(ctx), method)(*args, **kwargs)
    except GatewayError as exc:
        _fail(str(exc))


def _print_json(value: Any) -> None:
    out.print_json(json.dumps(value, default=str))


def _table(rows: list[dict[str, Any]], columns: list[str], title: str | None = None) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    out.print(table)


def _items(answer: Any, *names: str) -> list[dict[str, Any]]:
    if isinstance(answer, list):
        return answer
    for name in (*names, "items"):
        if isinstance(answer, dict) and isinstance(answer.get(name), list):
            return list(answer[name])
    return []


def _bytes_progress(description: str, total: int) -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
        disable=not err.is_terminal and total == 0,
    )


# ---------------------------------------------------------------- everyday tasks of agencies


@app.command()
def push(
    ctx: typer.Context,
    dataset: str,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    file_format: Annotated[
        str | None, typer.Option("--format", help="csv, json or jsonl (else from the file name)")
    ] = None,
    chunk_rows: Annotated[int, typer.Option(min=1, max=10_000, help="records per request")] = 2000,
    atomic: Annotated[bool, typer.Option(help="reject a whole chunk if any row fails")] = False,
    resume: Annotated[bool, typer.Option(help="skip chunks a previous run completed")] = True,
    show_errors: Annotated[int, typer.Option(help="how many row errors to list")] = 20,
) -> None:
    """Push a CSV or JSON file of records, in chunks; re-run the same command to resume."""
    try:
        fmt: FileFormat = detect_format(file) if file_format is None else _format(file_format)
    except ValueError as exc:
        _fail(str(exc))
    gateway = _gateway(ctx)
    size = file.stat().st_size
    with _bytes_progress("pushing", size) as progress:
        task = progress.add_task(f"push {file.name}", total=size)
        try:
            totals = push_file(
                gateway,
                dataset,
                file,
                fmt,
                chunk_rows=chunk_rows,
                atomic=atomic,
                resume=resume,
                on_progress=lambda read: progress.update(task, completed=min(read, size)),
            )
        except GatewayError as exc:
            progress.stop()
            _fail(f"{exc}. Run the same command again to resume: sent chunks are not repeated.")
        except ValueError as exc:
            _fail(f"{file.name}: {exc}")
        progress.update(task, completed=size)
    resumed = f" ({totals.resumed_chunks} from an earlier run)" if totals.resumed_chunks else ""
    out.print(
        f"{totals.chunks} chunks{resumed}: received {totals.received}, "
        f"accepted [green]{totals.accepted}[/green], rejected [red]{totals.rejected}[/red]"
    )
    if totals.batch_ids:
        out.print(f"batches: {', '.join(totals.batch_ids)}")
    if totals.errors and show_errors:
        _table(totals.errors[:show_errors], ["row", "field", "message"], title="row errors")
        if len(totals.errors) > show_errors:
            out.print(f"... and {totals.rejected - show_errors} more")


FORMATS: dict[str, FileFormat] = {"csv": "csv", "json": "json", "jsonl": "jsonl"}


def _format(value: str) -> FileFormat:
    if value not in FORMATS:
        raise ValueError(f"unknown format {value!r}: csv, json or jsonl")
    return FORMATS[value]


@app.command()
def batch(ctx: typer.Context, batch_id: str) -> None:
    """Status and counts of a batch."""
    answer = _call(ctx, "get_json", f"/v1/batches/{batch_id}")
    _table(
        [answer],
        [
            "batch_id",
            "dataset",
            "status",
            "received",
            "accepted",
            "rejected",
            "delivered",
            "depersonalised",
        ],
    )


@app.command()
def aggregates(
    ctx: typer.Context,
    dataset: str,
    geography: Annotated[str, typer.Option(help="layer, e.g. lsoa21")],
    period: Annotated[str, typer.Option(help="month, quarter, year...")] = "month",
    date_from: Annotated[str | None, typer.Option("--from", help="first date, YYYY-MM-DD")] = None,
    date_to: Annotated[str | None, typer.Option("--to", help="last date, YYYY-MM-DD")] = None,
    by: Annotated[str | None, typer.Option(help="split by this field, e.g. category")] = None,
    output_format: Annotated[Literal["csv", "geojson", "json"], typer.Option("--format")] = "csv",
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="file (else stdout)")
    ] = None,
) -> None:
    """Counts by area and period (suppressed where small), to CSV, GeoJSON or JSON."""
    params = {
        "geography": geography,
        "period": period,
        "from": date_from,
        "to": date_to,
        "by": by,
        "format": output_format,
    }
    gateway = _gateway(ctx)
    try:
        with gateway.stream(f"/v1/datasets/{dataset}/aggregates", params) as response:
            _write_stream(response.iter_bytes(), output)
    except GatewayError as exc:
        _fail(str(exc))
    if output is not None:
        err.print(f"wrote {output}")


def _write_stream(blocks: Iterator[bytes], output: Path | None) -> None:
    if output is None:
        for block in blocks:
            sys.stdout.buffer.write(block)
        sys.stdout.buffer.flush()
        return
    temporary = output.with_name(output.name + ".part")
    with temporary.open("wb") as handle:
        for block in blocks:
            handle.write(block)
    temporary.replace(output)  # never leave a truncated file under the final name


@app.command()
def report(
    ctx: typer.Context,
    quarter: Annotated[str, typer.Argument(help="information period, e.g. 2024-Q3")],
    output_format: Annotated[
        Literal["table", "json", "csv", "html"], typer.Option("--format")
    ] = "table",
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="file (else stdout)")
    ] = None,
) -> None:
    """The partnership's quarterly information-sharing report (operators: every provider)."""
    path = "/v1/reports/partnership"
    if output_format != "table":
        try:
            with _gateway(ctx).stream(
                path, {"quarter": quarter, "format": output_format}
            ) as answer:
                _write_stream(answer.iter_bytes(), output)
        except GatewayError as exc:
            _fail(str(exc))
        if output is not None:
            err.print(f"wrote {output}")
        return
    body = _call(ctx, "get_json", path, quarter=quarter)
    rows = [
        {**r, "on_time": {True: "yes", False: "late", None: "-"}[r["on_time"]],
         "required": r["completeness"]["required"], "optional": r["completeness"]["optional"]}
        for r in body["rows"]
    ]  # fmt: skip
    columns = ["provider", "dataset", "records", "received_last", "due", "on_time", "required"]
    _table(rows, [*columns, "optional", "geocoded", "rejected"], f"Quarter {body['quarter']}")
    _table(body["agreements"], ["id", "title", "status", "review_by", "review_state"], "Agreements")
    _table(body["maturity"], ["provider", "recipient", "level", "label"], "Maturity")


@app.command()
def quality(ctx: typer.Context, dataset: str) -> None:
    """Data quality of what your agency pushed to a dataset."""
    _print_json(_call(ctx, "get_json", f"/v1/datasets/{dataset}/quality"))


@app.command()
def reconcile(
    ctx: typer.Context,
    last: Annotated[bool, typer.Option(help="show the last report instead of running one")] = False,
) -> None:
    """Operators: compare raw (ingest) with derived records per dataset x provider and repair;
    exits 1 if they disagreed or the run failed."""
    if last:
        report = _call(ctx, "get_json", "/v1/reconcile")
    else:
        report = _call(ctx, "post_json", "/v1/reconcile")
    pairs = report.get("pairs") or []
    if pairs:
        _table(pairs, ["dataset", "provider", "raw", "derived", "agreed", "redelivered", "removed"])
    _print_json({k: v for k, v in report.items() if k != "pairs"})
    if report.get("state") == "failed" or report.get("lag_records"):
        raise typer.Exit(1)


@app.command()
def datasets(ctx: typer.Context) -> None:
    """The dataset catalogue."""
    rows = _items(_call(ctx, "get_json", "/v1/datasets"), "datasets")
    _table(rows, ["name", "title", "holder", "max_level"])


@app.command()
def me(ctx: typer.Context) -> None:
    """Your agency, roles and agreements."""
    _print_json(_call(ctx, "get_json", "/v1/me"))


@app.command("config")
def show_config(ctx: typer.Context) -> None:
    """Where the gateway URL and the key come from (the key itself is never shown)."""
    try:
        config = load_config(ctx.find_root().obj)
    except ConfigError as exc:
        _fail(str(exc))
    out.print(f"url: {config.url}\nkey from: {config.key_source}\nconfig file: {config_path()}")


# ---------------------------------------------------------------- operators


@agencies_app.command("add")
def agencies_add(
    ctx: typer.Context,
    code: str,
    name: Annotated[str, typer.Option(help="full name")],
    kind: Annotated[str, typer.Option(help="police, fire, health, local-authority, ...")],
) -> None:
    """Register an agency."""
    _print_json(_call(ctx, "post_json", "/v1/agencies", {"code": code, "name": name, "kind": kind}))


@agencies_app.command("list")
def agencies_list(ctx: typer.Context) -> None:
    """Every registered agency."""
    try:
        rows = list(_gateway(ctx).paginate("/v1/agencies"))
    except GatewayError as exc:
        _fail(str(exc))
    _table(rows, ["code", "name", "kind", "status"])


@keys_app.command("issue")
def keys_issue(
    ctx: typer.Context,
    agency: str,
    holder: Annotated[str | None, typer.Option(help="the person the key is for")] = None,
    scope: Annotated[
        list[str] | None, typer.Option(help="push, read, sign or admin; repeat for several")
    ] = None,
    expires: Annotated[str | None, typer.Option(help="last day it works, e.g. 2027-03-31")] = None,
) -> None:
    """Issue a key for an agency. It is shown once: hand it over securely."""
    body = {"holder": holder, "scopes": scope or None, "expires": expires}
    answer = _call(
        ctx,
        "post_json",
        f"/v1/agencies/{agency}/keys",
        {name: value for name, value in body.items() if value is not None},
    )
    out.print(f"key_id: {answer['key_id']}\nkey: {answer['key']}", highlight=False)
    if answer.get("scopes"):
        out.print(f"scopes: {', '.join(answer['scopes'])}", highlight=False)
    err.print("[yellow]The key is not shown again.[/yellow]")


@keys_app.command("revoke")
def keys_revoke(ctx: typer.Context, agency: str, key_id: str) -> None:
    """Revoke a key; every gateway replica refuses it within seconds."""
    _call(ctx, "delete", f"/v1/agencies/{agency}/keys/{key_id}")
    out.print(f"revoked {key_id} of {agency}")


@agreements_app.command("create")
def agreements_create(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="agreement JSON")],
) -> None:
    """Create a draft agreement from a JSON file (DESIGN section 3 shape)."""
    try:
        body = json.loads(file.read_text())
    except ValueError as exc:
        _fail(f"{file.name} is not JSON: {exc}")
    _print_json(_call(ctx, "post_json", "/v1/agreements", body))


def _agreement_action(ctx: typer.Context, agreement_id: str, action: str) -> None:
    answer = _call(ctx, "post_json", f"/v1/agreements/{agreement_id}/{action}")
    out.print(f"agreement {agreement_id}: {answer.get('status', action)}")


@agreements_app.command("sign")
def agreements_sign(ctx: typer.Context, agreement_id: str) -> None:
    """Sign an agreement for your agency."""
    _agreement_action(ctx, agreement_id, "sign")


@agreements_app.command("suspend")
def agreements_suspend(ctx: typer.Context, agreement_id: str) -> None:
    """Stop an agreement at once (operators)."""
    _agreement_action(ctx, agreement_id, "suspend")


@agreements_app.command("revoke")
def agreements_revoke(ctx: typer.Context, agreement_id: str) -> None:
    """End an agreement for good (operators)."""
    _agreement_action(ctx, agreement_id, "revoke")


@agreements_app.command("list")
def agreements_list(ctx: typer.Context) -> None:
    """Agreements you are party to (operators: all)."""
    try:
        rows = list(_gateway(ctx).paginate("/v1/agreements"))
    except GatewayError as exc:
        _fail(str(exc))
    _table(rows, ["id", "title", "status", "purpose", "start", "end"])


@agreements_app.command("show")
def agreements_show(ctx: typer.Context, agreement_id: str) -> None:
    """One agreement in full."""
    _print_json(_call(ctx, "get_json", f"/v1/agreements/{agreement_id}"))


GEO_TYPES = {
    ".geojson": "application/geo+json",
    ".json": "application/geo+json",
    ".gpkg": "application/geopackage+sqlite3",
    ".zip": "application/zip",
}


@geographies_app.command("load")
def geographies_load(
    ctx: typer.Context,
    layer: str,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    code_field: Annotated[str, typer.Option(help="attribute with the GSS code, e.g. LSOA21CD")],
    name_field: Annotated[str, typer.Option(help="attribute with the name, e.g. LSOA21NM")],
    wait: Annotated[bool, typer.Option(help="wait until the layer is served")] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait at most")] = 3600.0,
) -> None:
    """Load a boundary layer: GeoJSON, GeoPackage or zipped shapefile, any declared CRS; waits
    with a progress bar until the layer is served (the derived records rebuilt)."""
    content_type = GEO_TYPES.get(file.suffix.lower())
    if content_type is None:
        _fail(f"{file.name}: expected .geojson, .json, .gpkg or .zip")
    response = _upload_response(
        ctx,
        file,
        f"/v1/geographies/{layer}",
        {"code_field": code_field, "name_field": name_field},
        content_type,
    )
    answer = response.json()
    location = response.headers.get("location")
    if wait and location and answer.get("status") != "active":
        answer = {**answer, **_wait_for_layer(_gateway(ctx), location, timeout)}
    _print_json(answer)


def _wait_for_layer(gateway: Gateway, location: str, timeout: float) -> dict[str, Any]:
    """Poll the layer's status (the load's ``Location``) with a bar until it is served."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        "[progress.percentage]{task.percentage:>3.0f}%",
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as progress:
        task = progress.add_task("rebuilding the derived records", total=1.0)
        while time.monotonic() < deadline:
            try:
                status = gateway.get_json(location)
            except GatewayError as exc:
                progress.stop()
                _fail(str(exc))
            progress.update(task, completed=float(status.get("progress") or 0.0))
            if status.get("status") == "active":
                return {"status": "active", "progress": 1.0}
            if (status.get("rebuild") or {}).get("state") == "failed":
                progress.stop()
                _fail(f"the rebuild failed: {status['rebuild'].get('error')}; retry the load")
            time.sleep(POLL_SECONDS)
    _fail(f"the layer was not served within {timeout:.0f} s; `csp geographies list` shows it")
    return status


def _upload(
    ctx: typer.Context, file: Path, path: str, params: dict[str, Any], content_type: str
) -> Any:
    """POST a file as the body, streamed with a progress bar; the JSON answer."""
    return _upload_response(ctx, file, path, params, content_type).json()


def _upload_response(
    ctx: typer.Context, file: Path, path: str, params: dict[str, Any], content_type: str
) -> httpx.Response:
    """POST a file as the body, streamed with a progress bar; the answer."""
    gateway = _gateway(ctx)
    size = file.stat().st_size
    with _bytes_progress("uploading", size) as progress:
        task = progress.add_task(f"upload {file.name}", total=size)

        def body() -> Iterator[bytes]:
            progress.reset(task, total=size)
            with file.open("rb") as handle:
                for block in iter(lambda: handle.read(UPLOAD_BLOCK), b""):
                    progress.advance(task, len(block))
                    yield block

        try:
            response = gateway.request(
                "POST",
                path,
                content=body,
                params=params,
                headers={"Content-Type": content_type, "Content-Length": str(size)},
            )
        except GatewayError as exc:
            progress.stop()
            _fail(str(exc))
    return response


@snap_app.command("from-postcodes")
def snap_from_postcodes(
    ctx: typer.Context,
    name: str,
    postcodes: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, readable=True, help="Code-Point Open or ONSPD CSV"
        ),
    ],
    layer: Annotated[str, typer.Option(help="loaded layer whose areas the people table covers")],
    people: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="CSV of people (or households) per area of the layer"
        ),
    ] = None,
    code_column: Annotated[str, typer.Option(help="the people table's area code column")] = "code",
    count_column: Annotated[str, typer.Option(help="the people table's count column")] = (
        "population"
    ),
    persons_per_household: Annotated[
        float, typer.Option(help="1 when the table counts households")
    ] = 2.36,
    k: Annotated[int, typer.Option(min=1, help="households every catchment must hold")] = 8,
) -> None:
    """Build a snap layer from postcode centroids and a people or household table per area."""
    if people is not None:
        loaded = _upload(
            ctx,
            people,
            f"/v1/populations/{layer}",
            {"code_column": code_column, "population_column": count_column},
            "text/csv",
        )
        out.print(f"people table: {loaded.get('matched')} of {loaded.get('areas')} areas matched")
    answer = _upload(
        ctx,
        postcodes,
        f"/v1/snap-layers/{name}/postcodes",
        {"layer": layer, "k": k, "persons_per_household": persons_per_household},
        "text/csv",
    )
    _print_json(answer)


@geographies_app.command("list")
def geographies_list(ctx: typer.Context) -> None:
    """Loaded layers and their area counts."""
    _print_json(_call(ctx, "get_json", "/v1/geographies"))


@postcodes_app.command("load")
def postcodes_load(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    chunk_rows: Annotated[int, typer.Option(min=1, help="postcodes per request")] = 50_000,
) -> None:
    """Load postcode centroids from the ONS Postcode Directory CSV (pcds, oseast1m, osnrth1m)."""
    from csp_cli.chunks import chunks

    gateway = _gateway(ctx)
    size = file.stat().st_size
    loaded: list[Any] = []
    with _bytes_progress("loading", size) as progress:
        task = progress.add_task(f"load {file.name}", total=size)
        try:
            for chunk in chunks(file, "csv", chunk_rows):
                response = gateway.request(
                    "POST",
                    "/v1/postcodes",
                    content=chunk.body,
                    headers={"Content-Type": "text/csv"},
                )
                loaded.append(response.json())
                progress.update(task, completed=min(chunk.bytes_read, size))
        except GatewayError as exc:
            progress.stop()
            _fail(f"{exc}. Loading is an upsert: run the same command again.")
        except ValueError as exc:
            _fail(f"{file.name}: {exc}")
    total = sum(int(a.get("loaded", 0)) for a in loaded if isinstance(a, dict))
    out.print(f"{len(loaded)} requests, {total} postcodes loaded")


@audit_app.command("verify")
def audit_verify(ctx: typer.Context) -> None:
    """Check the audit hash chain and its signed checkpoints; exit 1 when it is broken."""
    answer = _call(ctx, "get_json", "/v1/audit/verify")
    if answer.get("ok"):
        out.print(
            f"[green]audit chain intact[/green]: {answer.get('entries')} entries, "
            f"head {answer.get('head')}"
        )
        return
    _fail(f"audit chain broken at entry {answer.get('first_bad_entry')}: {answer.get('reason')}")


@audit_app.command("witness")
def audit_witness(
    ctx: typer.Context,
    state: Annotated[Path | None, typer.Option(help="where the held checkpoint is kept")] = None,
) -> None:
    """Keep the hub's signed audit checkpoints and check each new one extends the last held."""
    path = state or witness.default_state()
    gateway = _gateway(ctx)
    try:
        outcome = witness.witness(gateway.get_json, path)
    except GatewayError as exc:
        _fail(str(exc))
    except witness.WitnessError as exc:
        _fail(f"the audit log was rewritten: {exc} (the held checkpoint is unchanged in {path})")
    newest = outcome.newest
    signed = "signatures checked" if outcome.signatures_checked else "signatures not checked"
    out.print(
        f"[green]{outcome.verified} new checkpoints extend the log held[/green] ({signed}); "
        f"holding checkpoint {newest['seq']} {newest['hash']} in {path}"
    )


@audit_app.command("export")
def audit_export(
    ctx: typer.Context,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="file (else stdout)")
    ] = None,
) -> None:
    """The whole audit chain as JSON lines, to keep or verify offline (operators)."""
    gateway = _gateway(ctx)
    try:
        with gateway.stream("/v1/audit/export", {}) as response:
            _write_stream(response.iter_bytes(), output)
    except GatewayError as exc:
        _fail(str(exc))
    if output is not None:
        err.print(f"wrote {output}")
