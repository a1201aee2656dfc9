"""deploy/README.md: every command is run by a test or CI, or says what it needs; every csp
command it shows exists with the options it uses; every alert is explained."""

from __future__ import annotations

import re
import shlex
from typing import Any

import httpx
import pytest
import typer.main
import yaml
from csp_cli.main import app

from services.depersonalise.main import create_app as create_depersonalise
from services.depersonalise.settings import Settings as DepersonaliseSettings
from services.ingest.main import create_app as create_ingest
from services.ingest.settings import Settings as IngestSettings
from shared.app import build_app
from tests.conftest import REPO

RUNBOOK = (REPO / "deploy" / "README.md").read_text()
BLOCKS = re.findall(r"```bash\n(.*?)```", RUNBOOK, flags=re.S)
MARKER = re.compile(r"# (tested: (?P<file>\S+)|needs: (?P<need>docker|cluster|hub))$")
# Paths and modules a tested block runs; the named test file must run the same ones.
RUN_TOKENS = re.compile(r"deploy/[\w./-]+\.(?:sh|py)|\./cli|services\.\w+\.migrations")


def command_lines(block: str) -> list[str]:
    lines = [line.strip() for line in block.strip().splitlines()[1:]]
    return [line for line in lines if line and not line.startswith("#")]


def test_every_block_is_tested_or_marked() -> None:
    assert len(BLOCKS) > 15
    for block in BLOCKS:
        first = block.strip().splitlines()[0]
        match = MARKER.match(first)
        assert match, f"block without a '# tested:' or '# needs:' line:\n{block}"
        if match.group("file"):
            tested = (REPO / match.group("file")).read_text()
            for line in command_lines(block):
                for token in RUN_TOKENS.findall(line):
                    assert token in tested, f"{match.group('file')} does not run {token}"


def csp_commands() -> list[list[str]]:
    commands = []
    for block in BLOCKS:
        for line in command_lines(block):
            for part in line.split(";"):
                words = shlex.split(part.strip().removeprefix("do ").strip())
                if words and words[0] == "csp":
                    commands.append(words[1:])
    return commands


@pytest.mark.parametrize("words", csp_commands(), ids=lambda w: " ".join(w[:2]))
def test_runbook_csp_commands_exist_with_their_options(words: list[str]) -> None:
    command: Any = typer.main.get_command(app)
    remaining = list(words)
    while hasattr(command, "commands") and remaining:
        assert remaining[0] in command.commands, f"csp has no command {words}"
        command, remaining = command.commands[remaining[0]], remaining[1:]
    params = command.params
    options = {name: p for p in params for name in p.opts if p.param_type_name == "option"}
    positional = []
    index = 0
    while index < len(remaining):
        word = remaining[index]
        if word.startswith("-"):
            assert word in options, f"csp {' '.join(words)}: unknown option {word}"
            index += 1 if options[word].is_flag else 2
        else:
            positional.append(word)
            index += 1
    arguments = [p for p in params if p.param_type_name == "argument"]
    assert len(positional) == len(arguments), f"csp {' '.join(words)}: arguments {positional}"


def test_every_alert_is_explained_in_the_runbook() -> None:
    rules = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())
    alerts = [r for group in rules["groups"] for r in group["rules"]]
    names = {rule["alert"] for rule in alerts}
    explained = set(re.findall(r"^### (Csp\w+)$", RUNBOOK, flags=re.M))
    assert names == explained
    for rule in alerts:
        assert rule["labels"]["severity"] in {"page", "ticket"}
        assert rule["annotations"]["summary"]


async def test_alerts_use_metrics_the_services_export() -> None:
    text = (REPO / "deploy" / "prometheus" / "alerts.yml").read_text()
    used = set(re.findall(r"\b(csp_[a-z_]+)\b", text))
    exported = ""
    apps = (
        build_app("probe", lifespan=None),
        create_ingest(IngestSettings()),
        create_depersonalise(DepersonaliseSettings()),
    )
    for service in apps:
        transport = httpx.ASGITransport(app=service)
        async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
            await client.get("/healthz")
            exported += (await client.get("/metrics")).text
    for metric in used:
        assert re.search(rf"^{metric}[{{ ]", exported, flags=re.M), f"{metric} is not exported"
