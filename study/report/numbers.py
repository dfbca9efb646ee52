"""How the report writes its numbers: a missing or non-finite value as a dash, a confirmation's
mean ± sd, durations, a configuration's searched values."""

from __future__ import annotations

import math

from study.confirm import Confirmed
from study.space import FAMILY_PARAMS


def num(value: float | None, digits: int = 4) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def pm(c: Confirmed, key: str, digits: int = 4) -> str:
    return f"{num(c.seeded.mean(key), digits)} ± {num(c.seeded.sd(key), digits)}"


def seconds(s: float) -> str:
    return f"{s:.0f} s" + (f" ({s / 60:.1f} min)" if s >= 120 else "")


def searched_values(config: dict) -> str:
    return ", ".join(
        f"{k.split('.')[-1]}={config[k]:.3g}" for k in FAMILY_PARAMS[config["model.family"]]
    )
