"""One method's outcome in a comparison: status, fitted estimator, time and memory."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

__all__ = ["_Result"]


@dataclass
class _Result:
    method: str
    status: str
    estimator: Any = None
    seconds: float = math.nan
    host_mib: float = math.nan
    cuda_mib: float = math.nan
    notes: list[str] = field(default_factory=list)
    singular: pd.DataFrame | None = None
