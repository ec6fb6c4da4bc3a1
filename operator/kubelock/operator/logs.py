"""Logging: one line per decision, as text or as JSON (`--log-format json`)."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence

# Resources a decision's line names: a claim may name up to 16 (`MAX_RESOURCES`); past this many the
# line says how many more, as the summary Events and the arbiter's messages do.
LOGGED_RESOURCES = 8

# Attributes every LogRecord has; anything else was passed through `extra=` and belongs in JSON.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def named_resources(resources: Sequence[str], shown: int = LOGGED_RESOURCES) -> tuple[str, ...]:
    """The resources a decision concerns, for its line: at most `shown`, then `and N more`."""
    if len(resources) <= shown:
        return tuple(resources)
    return (*resources[:shown], f"and {len(resources) - shown} more")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(log_format: str, verbose: bool, debug: Sequence[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter = (
        JsonFormatter()
        if log_format == "json"
        else logging.Formatter("%(asctime)sZ %(levelname)-7s %(name)s: %(message)s")
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # kopf reports every handler call; kubelock's own lines already say what happened.
    logging.getLogger("kopf").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    for name in debug:  # one part of the operator in detail (`kubelock.operator.viewlog`), the rest as set
        logging.getLogger(name).setLevel(logging.DEBUG)
