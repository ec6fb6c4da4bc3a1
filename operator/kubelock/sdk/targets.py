"""What one claim asks for: one resource, or several granted all together or not at all.

A claim of several resources (`spec.resources`) is one object, granted, renewed, lost and released
as a whole. Its conventional name covers the set, not the order it was listed in, so asking again
for the same resources in another order finds the same claim (acquire stays idempotent). A list of
one URI is a claim of that one resource (`spec.resource`), the same object `lock(uri)` makes.

Everything here is checked before any request is sent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from kubelock.api.types import MAX_RESOURCES
from kubelock.domain.resource import claim_name, normalise, not_nfc
from kubelock.domain.spelling import other_spelling
from kubelock.sdk import validation
from kubelock.sdk.errors import InvalidInput

Uris = str | Sequence[str]


@dataclass(frozen=True, slots=True)
class Target:
    uris: tuple[str, ...]  # as given, in the caller's order
    resources: tuple[str, ...]  # normalised, sorted

    @classmethod
    def of(cls, uris: Uris) -> Target:
        """One URI (a string), or a list of 1..16 URIs with no resource twice after normalisation."""
        if isinstance(uris, str):
            validation.resource(uris)
            return cls((uris,), (normalise(uris),))
        if not isinstance(uris, Sequence) or isinstance(uris, bytes):
            raise InvalidInput(f"resources must be a list of URIs, not {type(uris).__name__}")
        listed = tuple(uris)
        if not listed:
            raise InvalidInput("resources must name at least one URI")
        if len(listed) > MAX_RESOURCES:
            raise InvalidInput(f"one claim takes at most {MAX_RESOURCES} resources, not {len(listed)}")
        for uri in listed:
            validation.resource(uri)
        normalised = [normalise(u) for u in listed]
        repeated = sorted(r for r, n in Counter(normalised).items() if n > 1)
        if repeated:
            raise InvalidInput(
                f"resources name {', '.join(repeated)} more than once (URIs are compared after normalisation: "
                "scheme lower-cased, one trailing '/' removed)"
            )
        return cls(listed, tuple(sorted(normalised)))

    def to_claim(self) -> Target:
        """These resources, if a new claim may name them: each in Unicode NFC (the operator refuses
        other spellings, `domain.resource.not_nfc`) and in the one spelling RFC 3986 leaves as it is
        (admission refuses others, `domain.spelling.other_spelling`); releasing, renewing or reading a
        claim made before those rules takes any spelling."""
        for uri in self.uris:
            problem = not_nfc(uri) or other_spelling(uri)
            if problem is not None:
                raise InvalidInput(problem)
        return self

    @property
    def several(self) -> bool:
        return len(self.resources) > 1

    @property
    def label(self) -> str:
        """The resources for a message: `a` or `a, b and c`."""
        return label(self.resources)

    def claim_name(self, holder: str) -> str:
        """The conventional claim name of `holder` for these resources (see `domain.resource.claim_name`)."""
        return claim_name(holder, "\n".join(self.resources))

    def spec(self) -> dict[str, object]:
        """The claim's resource field(s): `resource` for one, `resources` for several."""
        return {"resources": list(self.uris)} if self.several else {"resource": self.uris[0]}

    def matches(self, resources: Sequence[str]) -> bool:
        """Whether a claim's (normalised) resources are exactly these, in any order."""
        return tuple(sorted(resources)) == self.resources


def listed(uris: Sequence[str]) -> list[str]:
    """The URIs of a claim of several, as a list: a lone string is refused rather than taken apart."""
    if isinstance(uris, str):
        raise InvalidInput(f"give a list of URIs, e.g. [{uris!r}]; for one resource, lock/acquire take the URI itself")
    Target.of(uris)
    return list(uris)


def label(resources: Sequence[str]) -> str:
    if len(resources) <= 1:
        return "".join(resources)
    return f"{', '.join(resources[:-1])} and {resources[-1]}"
