"""Resource URIs: validation, normalisation and the ResourceLock name derived from them.

The rules are the contract's: `scheme://rest`, scheme `[a-z][a-z0-9+.-]*` (compared
case-insensitively), no whitespace or control characters, at most 1024 bytes in UTF-8. Normalisation
lower-cases the scheme and removes one trailing `/`; everything else is compared byte for byte.

Lengths are bytes, as the API server's own "Too long: may not be more than N bytes" says (it counts
characters, which are never more than the bytes): so every length message counts what it says.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from kubelock.domain.holder import readable

MAX_RESOURCE_LENGTH = 1024  # bytes in UTF-8
MAX_HOLDER_LENGTH = 253  # bytes in UTF-8

# The same rule, for the API server's CEL (RE2) and pydantic's Rust regex engine.
RESOURCE_PATTERN = r"^[A-Za-z][A-Za-z0-9+.\-]*://[^\p{C}\p{Z}]+$"
HOLDER_PATTERN = r"^[^\p{C}\p{Z}]+$"

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_SLUG_UNSAFE = re.compile(r"[^a-z0-9]+")
_SLUG_MAX = 40


class InvalidResource(ValueError):
    """A resource URI or holder that breaks the contract's rules; the message says which rule."""


def _forbidden_character(text: str) -> str | None:
    for index, char in enumerate(text):
        category = unicodedata.category(char)
        if category[0] in ("C", "Z"):
            return f"character {index + 1} is {unicodedata.name(char, repr(char))} (U+{ord(char):04X})"
    return None


def utf8_length(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def validate_resource(uri: object) -> str:
    """Return `uri` unchanged if it is a valid resource URI, else raise InvalidResource."""
    if not isinstance(uri, str):
        raise InvalidResource(f"resource must be a string, not {type(uri).__name__}")
    if not uri:
        raise InvalidResource("resource must not be empty; write a URI such as github://acme/app/issues/42")
    if utf8_length(uri) > MAX_RESOURCE_LENGTH:
        raise InvalidResource(
            f"resource is {utf8_length(uri)} bytes long in UTF-8; at most {MAX_RESOURCE_LENGTH} are allowed"
        )
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise InvalidResource(f"resource {uri[:80]!r} has no '://'; write scheme://rest, e.g. deploy://api-prod")
    if not _SCHEME.fullmatch(scheme):
        raise InvalidResource(
            f"resource scheme {scheme[:40]!r} is invalid: it must start with a letter and contain only "
            "letters, digits, '+', '.' or '-'"
        )
    if not rest:
        raise InvalidResource(f"resource {uri!r} has nothing after '://'")
    bad = _forbidden_character(uri)
    if bad:
        raise InvalidResource(f"resource must not contain whitespace or control characters: {bad}")
    return uri


def validate_holder(holder: object) -> str:
    """Return `holder` unchanged if it is a valid holder identity, else raise InvalidResource."""
    if not isinstance(holder, str):
        raise InvalidResource(f"holder must be a string, not {type(holder).__name__}")
    if not holder or utf8_length(holder) > MAX_HOLDER_LENGTH:
        length = utf8_length(holder)
        raise InvalidResource(f"holder must be 1 to {MAX_HOLDER_LENGTH} bytes long in UTF-8, not {length}")
    bad = _forbidden_character(holder)
    if bad:
        raise InvalidResource(f"holder must not contain whitespace or control characters: {bad}")
    return holder


def not_nfc(uri: str) -> str | None:
    """Why `uri` is not in Unicode normal form NFC (None when it is), saying how to write it.

    Resources compare byte for byte after `normalise`, so `x://café` with a composed `é` and with `e`
    and a combining accent would be two locks on one thing. Normalising here would change the lock
    names an older operator derived (a lock held under the decomposed spelling would miss a claim
    made under it again), so a claim not in NFC is refused instead and its holder told the NFC
    spelling.
    """
    if unicodedata.is_normalized("NFC", uri):
        return None
    nfc = unicodedata.normalize("NFC", uri)
    start = next(i for i, (a, b) in enumerate(zip(uri + "\0", nfc + "\1", strict=False)) if a != b)
    same_end = 0
    while same_end < min(len(uri), len(nfc)) - start and uri[-1 - same_end] == nfc[-1 - same_end]:
        same_end += 1
    return (
        f"resource {uri[:200]!r} is not in Unicode normal form NFC: from character {start + 1}, "
        f"{_code_points(uri[start:len(uri) - same_end])} is {_code_points(nfc[start:len(nfc) - same_end])} "
        f"in NFC, which names the same thing and would be another lock; write the URI in NFC "
        "(Python: unicodedata.normalize('NFC', uri))"
    )


def _code_points(text: str, most: int = 4) -> str:
    shown = " ".join(f"U+{ord(c):04X}" for c in text[:most])
    return shown + (" ..." if len(text) > most else "")


def normalise(uri: str) -> str:
    """The form in which two resources are compared: scheme lower-cased, one trailing '/' removed."""
    scheme, _, rest = uri.partition("://")
    normalised = f"{scheme.lower()}://{rest}"
    if normalised.endswith("/") and len(rest) > 1:
        normalised = normalised[:-1]
    return normalised


def digest(text: str, length: int = 12) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def slug(text: str, limit: int = _SLUG_MAX) -> str:
    """A lower-case DNS-label-safe rendering of `text` for readable object names (may be empty)."""
    return _SLUG_UNSAFE.sub("-", text.lower()).strip("-")[:limit].strip("-")


def lock_name(normalised: str) -> str:
    """The ResourceLock name for a normalised resource: a readable slug plus a hash.

    Deterministic, so the API server's name uniqueness makes a grant atomic: two creates of the
    same lock cannot both succeed. The hash covers the whole URI, so slugs that collide do not.
    """
    readable = slug(normalised)
    return f"{readable}-{digest(normalised)}" if readable else f"lock-{digest(normalised)}"


def claim_name(holder: str, normalised: str) -> str:
    """The conventional LockClaim name the SDK and CLI use for (holder, resource).

    One holder asking twice for the same resource gets the same claim, which makes acquire idempotent.
    The readable part shows the holder without its kind and namespace (see `holder.readable`); the
    hash covers the whole holder, so instances and identities that read alike still differ.
    """
    what = slug(normalised, 30)
    who = slug(readable(holder), 20)
    parts = [p for p in (who, what) if p]
    return "-".join([*parts, digest(f"{holder}\n{normalised}", 10)])
