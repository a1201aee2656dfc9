"""The three levels of information (design card, "the three levels"), lowest first."""

from __future__ import annotations

from typing import Literal

Level = Literal["aggregate", "depersonalised", "personal"]
LEVELS: tuple[Level, ...] = ("aggregate", "depersonalised", "personal")
# A grant at one level covers every level below it.
LEVEL_RANK: dict[str, int] = {level: rank for rank, level in enumerate(LEVELS)}
