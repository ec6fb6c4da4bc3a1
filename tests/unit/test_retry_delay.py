"""When the API client retries a failed request, and after how long: a 429 waits what the API server
asked for, and is retried more often than other transient failures."""

from __future__ import annotations

from kubelock.kube.client import THROTTLED_RETRIES, retry_delay
from kubelock.kube.errors import ApiError, Conflict, Unreachable, from_response


def throttled(seconds: int | None = None, header: str | None = None) -> ApiError:
    details = {"retryAfterSeconds": seconds} if seconds is not None else {}
    error = from_response(429, {"reason": "TooManyRequests", "message": "too many requests", "details": details})
    error.retry_after_header = header
    return error


def test_a_client_that_does_not_retry_never_waits() -> None:
    assert retry_delay(throttled(1), 0, 0) is None
    assert retry_delay(Unreachable("timeout"), 0, 0) is None


def test_other_transient_failures_back_off_with_jitter_for_the_clients_retries() -> None:
    for attempt, cap in ((0, 0.1), (1, 0.2), (2, 0.4), (6, 3.2)):
        delay = retry_delay(Unreachable("timeout"), attempt, 10)
        assert delay is not None and 0 <= delay <= cap
    assert retry_delay(from_response(503, {}), 3, 4) is not None
    assert retry_delay(from_response(503, {}), 4, 4) is None, "four retries, then the failure is the caller's"


def test_a_refusal_that_is_not_transient_is_never_retried() -> None:
    assert retry_delay(Conflict(409, "Conflict", "changed"), 0, 4) is None


def test_a_throttled_request_waits_what_the_server_asked_and_is_retried_as_client_go_does() -> None:
    delay = retry_delay(throttled(2), 0, 4)
    assert delay is not None and 2.0 <= delay <= 3.0, "Retry-After, spread by up to half again"
    delay = retry_delay(throttled(None, header="1"), 0, 4)
    assert delay is not None and 1.0 <= delay <= 1.5, "the header counts as well"
    assert retry_delay(throttled(1), 4, 4) is not None, "past the client's own retries"
    assert retry_delay(throttled(1), THROTTLED_RETRIES - 1, 4) is not None
    assert retry_delay(throttled(1), THROTTLED_RETRIES, 4) is None
    assert throttled(None).retry_after is None and throttled(0).retry_after == 0
