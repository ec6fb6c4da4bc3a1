"""Kubernetes API errors, carrying the parsed `Status` the server sent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ApiError(Exception):
    """A request the API server answered with an error status."""

    def __init__(self, status: int, reason: str, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body or {}
        self.sent_headers: Mapping[str, str] = {}  # the request's headers (to tell which credential a 401 refused)
        self.retry_after_header: str | None = None  # the answer's Retry-After, if any

    @property
    def retry_after(self) -> float | None:
        """Seconds the API server asked the client to wait before trying again (a 429 from API Priority
        and Fairness, a 5xx while it starts): its Retry-After header or the Status's
        details.retryAfterSeconds."""
        for value in (self.retry_after_header, (self.body.get("details") or {}).get("retryAfterSeconds")):
            try:
                seconds = float(value) if value is not None else None
            except (TypeError, ValueError):
                seconds = None
            if seconds is not None and seconds >= 0:
                return seconds
        return None

    @property
    def causes(self) -> list[dict[str, Any]]:
        details = self.body.get("details") or {}
        return list(details.get("causes") or [])


class NotFound(ApiError):
    """404 naming the object: that object does not exist (deleted, or never made)."""

    @property
    def object_name(self) -> str | None:
        """The name of the object the API server found missing (the Status's `details.name`)."""
        name = (self.body.get("details") or {}).get("name")
        return str(name) if name else None


class Unserved(ApiError):
    """404 naming no object: the path itself is not served ("404 page not found", or a Status without
    `details.name`). The resource's API is not installed, or not registered yet: a restarting API
    server serves a custom resource's path only once its CRD informer has synced. It says nothing of
    the object, so it is deliberately no `NotFound`: an `except NotFound` never takes it for a
    deletion. It is transient trouble (`transient`), retried as such."""


class Conflict(ApiError):
    """409: AlreadyExists on create, or a failed resourceVersion/uid precondition."""

    @property
    def already_exists(self) -> bool:
        return self.reason == "AlreadyExists"


class Forbidden(ApiError):
    pass


class Invalid(ApiError):
    """422 (or 400): the request was refused by validation or admission."""


class Unauthorized(ApiError):
    pass


class Unreachable(Exception):
    """The API server could not be reached (connection refused, DNS, TLS, timeout)."""

    permanent = False  # True: trying again at once cannot help (a credential plugin that failed)
    # True: no connection was made at all (refused, no such host): the address itself is in doubt,
    # which a client's message can say (a cluster not running, a kubeconfig naming another one).
    connect_failed = False


class BadAnswer(Unreachable):
    """An answer that cannot be used: a success whose body is not a JSON object (a list's items not
    objects), a watch line that is no JSON event, or an answer past the client's bounds on size. It
    is never taken for an empty answer: "no claims" from a broken proxy would be a lie."""

    permanent = True  # asked again at once, the same server says the same


_BY_STATUS: dict[int, type[ApiError]] = {
    400: Invalid,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: Invalid,
}


def from_response(status: int, body: dict[str, Any] | None, text: str = "") -> ApiError:
    body = body if isinstance(body, dict) else {}
    reason = str(body.get("reason") or "")
    message = str(body.get("message") or text or f"HTTP {status}")
    kind = _BY_STATUS.get(status, ApiError)
    if kind is NotFound and not (body.get("details") or {}).get("name"):
        kind = Unserved  # a 404 naming no object: the path, not an object, is missing
    return kind(status, reason, message, body)


def gone(error: BaseException) -> bool:
    """A 404 that names the object: that object does not exist (deleted, or never made). An unserved
    404 (`Unserved`) is not: it says nothing of the object."""
    return isinstance(error, NotFound)


def other_object(error: BaseException) -> bool:
    """A patch naming the object's uid (`metadata.uid`, the only uid precondition a patch can carry)
    met another object of that name: the API server refuses it as a change of an immutable field, 422
    with the cause `metadata.uid`, not as a failed precondition (409, which a delete's preconditions
    get). Either way the object the writer meant is gone."""
    if isinstance(error, Conflict):
        return True
    return isinstance(error, Invalid) and any(
        isinstance(cause, dict) and cause.get("field") == "metadata.uid" for cause in error.causes
    )


def transient(error: BaseException) -> bool:
    """Worth retrying: throttling, server-side trouble, a connection that failed, or a path not served
    (a restarting API server serves a custom resource's path only once its CRD informer has synced:
    until then every request for it answers "404 page not found", which says nothing of the object)."""
    if isinstance(error, Unreachable):
        return not getattr(error, "permanent", False)
    if isinstance(error, Unserved):
        return True
    return isinstance(error, ApiError) and (error.status == 429 or error.status >= 500)
