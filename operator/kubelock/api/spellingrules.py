"""The CRD's CEL rules refusing a resource URI that RFC 3986 would spell otherwise (`domain.spelling`).

Each rule names what it found and, where CEL can build it, the spelling to use; the SDK and the
commands (`domain.spelling.other_spelling`) always give the whole spelling.

A claim stored before these rules must still take its renewals, status writes and the removal of
its finalizer, each a write the API server validates whole: it does, because the API server lets an
unchanged value keep breaking a rule added after it was stored (CRD validation ratcheting, on by
default from Kubernetes 1.30, the oldest kubelock supports). Ratcheting matches the old value to the
new one by field; on `spec.resources` the rules stand on the list, a field, rather than on its items,
so they do not depend on how a version matches the items of a plain list (1.36 matches them too:
tests/integration/test_admission_spellings.py passed with the rules on the items).
"""

from __future__ import annotations

from kubelock.domain.spelling import (
    DEFAULT_PORT_PATTERN,
    DOT_SEGMENT_PATTERN,
    HOST_CASE_PATTERN,
    HOST_END_PATTERN,
    HOST_START_PATTERN,
    HOST_THROUGH_PATTERN,
    LOWER_HEX_ESCAPE_PATTERN,
    UNRESERVED_ESCAPE_PATTERN,
)

_ANOTHER_LOCK = "so it would be another lock on the same resource"
_PORT_BEFORE_END = DEFAULT_PORT_PATTERN.removesuffix("(?:[/?#]|$)")


def _messages(u: str) -> list[tuple[str, str]]:
    """(pattern, CEL message expression) for the URI expression `u`, one per refused spelling."""
    host = f"{u}.substring({u}.find(r'{HOST_START_PATTERN}').size(), {u}.find(r'{HOST_THROUGH_PATTERN}').size())"
    after_host = f"{u}.substring({u}.find(r'{HOST_THROUGH_PATTERN}').size())"
    after_authority = f"{u}.substring({u}.find(r'{HOST_END_PATTERN}').size())"
    port_prefix = f"{u}.find(r'{_PORT_BEFORE_END}')"
    return [
        (
            DOT_SEGMENT_PATTERN,
            f"'resource ' + {u} + ' has a dot segment in its path (' + {u}.find(r'{DOT_SEGMENT_PATTERN}') + "
            "'): RFC 3986 removes every . and .. segment (a .. with the segment before it), "
            f"{_ANOTHER_LOCK}; write the URI without them (kubelock acquire and the SDK say the whole spelling)'",
        ),
        (
            HOST_CASE_PATTERN,
            f"'resource ' + {u} + ' has upper-case letters in its host ' + {host} + ': a host has no case by RFC "
            f"3986, {_ANOTHER_LOCK}; write ' + ({host}.contains('%') ? 'its letters in lower case (the hex "
            f"digits of a %-escape stay upper-case)' : {u}.find(r'{HOST_START_PATTERN}') + {host}.lowerAscii() + "
            f"{after_host})",
        ),
        (
            UNRESERVED_ESCAPE_PATTERN,
            f"'resource ' + {u} + ' has ' + {u}.find(r'{UNRESERVED_ESCAPE_PATTERN}') + ', the escape of an "
            "unreserved character (a letter, digit, -, ., _ or ~), which RFC 3986 compares as the character "
            f"itself, {_ANOTHER_LOCK}; write the character unescaped'",
        ),
        (
            LOWER_HEX_ESCAPE_PATTERN,
            f"'resource ' + {u} + ' has the escape ' + {u}.find(r'{LOWER_HEX_ESCAPE_PATTERN}') + ' with "
            f"lower-case hex digits, which RFC 3986 compares without case, {_ANOTHER_LOCK}; write ' + "
            f"{u}.find(r'{LOWER_HEX_ESCAPE_PATTERN}').upperAscii() + ' (every escape in upper-case hex)'",
        ),
        (
            DEFAULT_PORT_PATTERN,
            f"'resource ' + {u} + ' names its scheme\\'s default port or an empty one (' + {port_prefix}.substring("
            f"{port_prefix}.lastIndexOf(':')) + '), which RFC 3986 omits, {_ANOTHER_LOCK}; write ' + "
            f"{port_prefix}.substring(0, {port_prefix}.lastIndexOf(':')) + {after_authority}",
        ),
    ]


def resource_rules() -> list[dict[str, str]]:
    """The rules of `spec.resource`."""
    return [{"rule": f"!self.matches(r'{pattern}')", "messageExpression": message} for pattern, message
            in _messages("self")]


def resources_rules() -> list[dict[str, str]]:
    """The rules of `spec.resources`: each names the first URI of the list that breaks it."""
    rules = []
    for index, (pattern, _) in enumerate(_messages("self")):
        _, message = _messages(f"self.filter(r, r.matches(r'{pattern}'))[0]")[index]
        rules.append({"rule": f"self.all(r, !r.matches(r'{pattern}'))", "messageExpression": message})
    return rules
