"""Where the CLI finds the gateway and the API key: environment first, then the config file.

The key is never a command-line flag, so it does not end up in shell history or ``ps`` output.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"


class ConfigError(Exception):
    """The configuration is missing or unsafe."""


@dataclass(frozen=True)
class Config:
    url: str
    api_key: str | None
    key_source: str


def config_path() -> Path:
    """``$CSP_CONFIG``, else ``$XDG_CONFIG_HOME/csp/config.toml``, else ``~/.config/csp/...``."""
    explicit = os.environ.get("CSP_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "csp" / "config.toml"


def _read_file(path: Path) -> dict[str, object]:
    if not path.exists():
        return {}
    mode = path.stat().st_mode
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{path} holds an API key and must be readable by you only: chmod 600 {path}"
        )
    with path.open("rb") as handle:
        return tomllib.load(handle)


def load_config(url_option: str | None = None) -> Config:
    """The gateway URL (option, ``CSP_URL``, file, default) and the key (``CSP_API_KEY``, file)."""
    path = config_path()
    data = _read_file(path)
    url = url_option or os.environ.get("CSP_URL") or str(data.get("url") or DEFAULT_URL)
    key = os.environ.get("CSP_API_KEY")
    if key:
        return Config(url.rstrip("/"), key, "CSP_API_KEY")
    file_key = data.get("api_key")
    if isinstance(file_key, str) and file_key:
        return Config(url.rstrip("/"), file_key, str(path))
    return Config(url.rstrip("/"), None, "none")
