"""placeholder"""
from __future__ import annotations
from typing import Any
TITLE = "bad input"
async def run(env: Any) -> Any:
    raise NotImplementedError
