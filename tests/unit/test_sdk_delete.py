"""Which failures of a delete of one's own claim are tried again (for a bounded time): a refusal by an
authorizer that may still be catching up after an API server restart, and an API server away for a
moment; never a refusal of the request itself."""

from __future__ import annotations

import pytest

from kubelock.kube import errors as kube_errors
from kubelock.sdk.client import _passing


@pytest.mark.parametrize(
    ("error", "again"),
    [
        (kube_errors.Forbidden(403, "Forbidden", "cannot delete resource lockclaims"), True),
        (kube_errors.Unauthorized(401, "Unauthorized", "Unauthorized"), True),
        (kube_errors.Unreachable("connection refused"), True),
        (kube_errors.ApiError(503, "ServiceUnavailable", "not all paths installed"), True),
        (kube_errors.ApiError(429, "TooManyRequests", "storage is (re)initializing"), True),
        (kube_errors.Invalid(422, "Invalid", "bad precondition"), False),
    ],
)
def test_a_refused_or_unreachable_delete_is_tried_again(
    error: kube_errors.ApiError | kube_errors.Unreachable, again: bool
) -> None:
    assert _passing(error) is again


def test_a_credential_that_cannot_work_is_not_tried_again() -> None:
    failed = kube_errors.Unreachable("the exec plugin failed")
    failed.permanent = True
    assert not _passing(failed)
