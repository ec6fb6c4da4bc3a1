"""Input checks done before any request, with messages that say what to write instead."""

from __future__ import annotations

import math
import re

from kubelock.api.types import MAX_PERMITS, MAX_PRIORITY, MAX_TTL_CEILING
from kubelock.domain.holder import InvalidInstance, validate_instance
from kubelock.domain.resource import InvalidResource, validate_holder, validate_resource
from kubelock.sdk.errors import InvalidInput

_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_WAIT_SECONDS = MAX_TTL_CEILING


def resource(uri: object) -> str:
    try:
        return validate_resource(uri)
    except InvalidResource as error:
        raise InvalidInput(str(error)) from None


def holder(name: object) -> str:
    try:
        return validate_holder(name)
    except InvalidResource as error:
        raise InvalidInput(str(error)) from None


def instance(name: object) -> str:
    try:
        return validate_instance(name)
    except InvalidInstance as error:
        raise InvalidInput(str(error)) from None


def namespace(name: object) -> str:
    if not isinstance(name, str) or len(name) > 63 or not _NAMESPACE.fullmatch(name):
        raise InvalidInput(
            f"namespace {name!r} is invalid: 1-63 lower-case letters, digits or '-', starting and ending "
            "with a letter or digit"
        )
    return name


def need(mode: object, permits: object) -> None:
    """A mode (Exclusive or Shared) and a number of permits (1..1000; 1 in Shared mode)."""
    if mode not in ("Exclusive", "Shared"):
        raise InvalidInput(f"mode must be Exclusive or Shared, not {mode!r}")
    if isinstance(permits, bool) or not isinstance(permits, int):
        raise InvalidInput(f"permits must be a whole number, not {permits!r}")
    if not 1 <= permits <= MAX_PERMITS:
        raise InvalidInput(f"permits must be between 1 and {MAX_PERMITS}, not {permits}")
    if mode == "Shared" and permits != 1:
        raise InvalidInput("a shared lock takes no permits: drop --permits (or permits=) with --shared (mode=Shared)")


def ttl(value: object) -> int | None:
    """A lease duration in whole seconds, 1..86400 (None: the operator's default)."""
    if value is None:
        return None
    # bool is an int subclass; a float such as 1.5 or nan must not silently become something else.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"ttl must be a whole number of seconds, not {value!r}")
    if not 1 <= value <= MAX_TTL_CEILING:
        raise InvalidInput(f"ttl must be between 1 and {MAX_TTL_CEILING} seconds, not {value}")
    return value


def flag(value: object, what: str) -> bool:
    """True or False, nothing that merely looks so: the claim's model reads "no" as False where
    Python's `if` reads it as true, and the two would then disagree about what was asked."""
    if not isinstance(value, bool):
        raise InvalidInput(f"{what} must be True or False, not {value!r}")
    return value


def priority(value: object) -> int:
    """A queue priority, a whole number from -1000 to 1000. Checked here, not left to the claim's
    model: that one coerces True, "5" and 1.0 into numbers, and True would be sent as priority 1,
    ahead of the queue."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"priority must be a whole number from -{MAX_PRIORITY} to {MAX_PRIORITY}, not {value!r}")
    if not -MAX_PRIORITY <= value <= MAX_PRIORITY:
        raise InvalidInput(f"priority must be between -{MAX_PRIORITY} and {MAX_PRIORITY}, not {value}")
    return value


def timeout(value: object, what: str = "timeout") -> float | None:
    """A wait in seconds, more than 0 and at most 86400 (None: wait as long as it takes)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{what} must be a number of seconds, not {value!r}")
    if not 0 < value <= MAX_WAIT_SECONDS:
        raise InvalidInput(f"{what} must be more than 0 and at most {MAX_WAIT_SECONDS} seconds, not {value}")
    return float(value)
