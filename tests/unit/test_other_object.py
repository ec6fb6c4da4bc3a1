"""`kube.errors.other_object`: a patch whose `metadata.uid` names an object that is gone met another
object of the same name. The API server refuses such a patch as a change of an immutable field (422,
cause `metadata.uid`), not as a failed precondition; the body below is what kube-apiserver v1.36.3
answered (tests/integration/test_hostile_twelfth.py)."""

from __future__ import annotations

from kubelock.kube.errors import from_response, other_object

UID_CHANGED = {
    "kind": "Status",
    "apiVersion": "v1",
    "status": "Failure",
    "message": 'LockClaim.kubelock.dev "c" is invalid: metadata.uid: Invalid value: "4036f16e": field is immutable',
    "reason": "Invalid",
    "details": {
        "name": "c",
        "group": "kubelock.dev",
        "kind": "LockClaim",
        "causes": [{"reason": "FieldValueInvalid", "message": "Invalid value: \"4036f16e\": field is immutable",
                    "field": "metadata.uid"}],
    },
    "code": 422,
}


def test_a_patch_that_met_another_object_of_its_name_is_told_apart() -> None:
    assert other_object(from_response(422, UID_CHANGED))
    assert other_object(from_response(409, {"reason": "Conflict", "message": "Precondition failed: UID"}))


def test_other_refusals_are_not_taken_for_another_object() -> None:
    ttl = {"reason": "Invalid", "message": "spec.ttlSeconds",
           "details": {"causes": [{"field": "spec.ttlSeconds", "reason": "FieldValueInvalid"}]}}
    assert not other_object(from_response(422, ttl))
    assert not other_object(from_response(422, {"reason": "Invalid", "details": {"causes": ["metadata.uid"]}}))
    assert not other_object(from_response(403, {"reason": "Forbidden", "message": "metadata.uid"}))
    assert not other_object(from_response(404, {"reason": "NotFound", "details": {"name": "c"}}))
