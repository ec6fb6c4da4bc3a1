"""placeholder"""
from __future__ import annotations
from typing import Any
TITLE = "soak"
async def run(env: Any, minutes: float) -> Any:
    raise NotImplementedError
