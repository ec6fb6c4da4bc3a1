"""Spellings of one resource that RFC 3986 compares as equal, refused for new claims.

A resource's lock is named from its spelling (`resource.normalise` lower-cases the scheme and removes
one trailing `/`, nothing more), so `github://ACME.example/x` and `github://acme.example/x` would be
two locks on one thing. Canonicalising them would change the lock names an older operator derived
(across an upgrade, a claim under the old spelling and one under the new would both hold), so a new
claim whose URI RFC 3986 would rewrite is refused instead, and told the one spelling to use: at
admission (the CRD's CEL rules use the patterns below) and in the SDK and commands before sending.
The operator itself does not refuse them: a claim admitted before these rules works as it did.

Refused, each one resource by RFC 3986 whatever the scheme (section 6.2.2), or by the scheme's own
definition (6.2.3) for the two schemes whose default port kubelock knows:
- a dot segment, `.` or `..` as a whole segment of the path (6.2.2.3, 5.2.4);
- an upper-case ASCII letter in the host (6.2.2.1), outside a `%`-escape;
- a `%`-escape of an unreserved character (`%41` is `A`, 6.2.2.2), in any part;
- a `%`-escape with a lower-case hex digit (`%c3` is `%C3`, 6.2.2.1);
- an empty port (`x://h:/p`, 3.2.3), and `:80` on http, `:443` on https (6.2.3; RFC 9110 4.2).
Not refused: `//` (an empty segment) and `%2F` (an escaped `/`) are other URIs by RFC 3986, and a
default port of any other scheme is unknown to kubelock.

Only an authority RFC 3986 can parse has a host or a port here: `deploy://Prod:API` has none (its
"port" is not digits), so its letters are left as written. The patterns are RE2 and Python `re` alike.
"""

from __future__ import annotations

import re

_PREFIX = r"^[^/?#]*://"
_USERINFO = r"(?:[^/?#@]*@)?"
_HOST_CHAR = r"(?:[^/?#@:\[\]%]|%[0-9A-Fa-f]{2})"
_IP_LITERAL_CHAR = r"[^/?#@\]]"
_END = r"(?:[/?#]|$)"
_HOST = rf"(?:\[{_IP_LITERAL_CHAR}*\]|{_HOST_CHAR}*)"

DOT_SEGMENT_PATTERN = _PREFIX + r"[^/?#]*/(?:[^?#]*/)?\.\.?" + _END
HOST_CASE_PATTERN = (
    _PREFIX + _USERINFO
    + rf"(?:{_HOST_CHAR}*[A-Z]{_HOST_CHAR}*|\[{_IP_LITERAL_CHAR}*[A-Z]{_IP_LITERAL_CHAR}*\])(?::[0-9]*)?" + _END
)
UNRESERVED_ESCAPE_PATTERN = r"%(?:[46][1-9A-Fa-f]|[57][0-9Aa]|3[0-9]|2[DEde]|5[Ff]|7[Ee])"
LOWER_HEX_ESCAPE_PATTERN = r"%(?:[a-f][0-9A-Fa-f]|[0-9A-F][a-f])"
DEFAULT_PORT_PATTERN = (
    rf"^(?:(?i:https)://{_USERINFO}{_HOST}:443|(?i:http)://{_USERINFO}{_HOST}:80"
    rf"|[^/?#]*://{_USERINFO}{_HOST}:){_END}"
)
HOST_START_PATTERN = _PREFIX + _USERINFO
"""The URI up to its host (a CEL message quotes the host from there)."""
HOST_THROUGH_PATTERN = HOST_START_PATTERN + _HOST
"""The URI through its host."""
HOST_END_PATTERN = _PREFIX + r"[^/?#]*"
"""The URI up to the end of its authority."""

_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_PORT_PREFIX = re.compile(
    rf"^(?:(?i:https)://{_USERINFO}{_HOST}(?=:443{_END})|(?i:http)://{_USERINFO}{_HOST}(?=:80{_END})"
    rf"|[^/?#]*://{_USERINFO}{_HOST}(?=:{_END}))"
)
_HOST_CASE = re.compile(HOST_CASE_PATTERN)
_HOST_PORT = re.compile(_PREFIX + _USERINFO + rf"({_HOST})(?::[0-9]*)?" + _END)
_DOT_SEGMENT = re.compile(DOT_SEGMENT_PATTERN)
_UNRESERVED_ESCAPE = re.compile(UNRESERVED_ESCAPE_PATTERN)
_LOWER_HEX_ESCAPE = re.compile(LOWER_HEX_ESCAPE_PATTERN)
_DEFAULT_PORT = re.compile(DEFAULT_PORT_PATTERN)
_DOT = re.compile(r"/\.\.?" + _END)
_LETTERS_OR_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}|[A-Z]+")


def lower_host(host: str) -> str:
    """`host` with its ASCII letters lower-cased, escapes (upper-case hex, 6.2.2.1) and the rest as written."""
    return _LETTERS_OR_ESCAPE.sub(lambda m: m.group() if m.group().startswith("%") else m.group().lower(), host)


def _escapes(text: str) -> str:
    """Escapes of unreserved characters decoded, every other escape in upper-case hex (6.2.2.1-2)."""

    def one(match: re.Match[str]) -> str:
        char = chr(int(match.group()[1:], 16))
        return char if char in _UNRESERVED else match.group().upper()

    return _ESCAPE.sub(one, text)


def remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4 for an absolute path (as every path after an authority is)."""
    out: list[str] = []
    segments = path.split("/")[1:]
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "..":
            if len(out) > 0:
                out.pop()
            if last:
                out.append("")
        elif segment == ".":
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


def one_spelling(uri: str) -> str:
    """The spelling of `uri` that RFC 3986 leaves as it is (the one a new claim must use)."""
    uri = _escapes(uri)  # decoding never makes or removes a '/', '?', '#', '@' or ':'
    if (host_port := _HOST_PORT.match(uri)) is not None:
        uri = uri[: host_port.start(1)] + lower_host(host_port.group(1)) + uri[host_port.end(1):]
    if (port := _PORT_PREFIX.match(uri)) is not None:
        after = uri[port.end() + 1:]
        uri = port.group() + after[len(after) - len(after.lstrip("0123456789")):]
    authority_end = uri.find("://") + 3
    while authority_end < len(uri) and uri[authority_end] not in "/?#":
        authority_end += 1
    path_end = authority_end
    while path_end < len(uri) and uri[path_end] not in "?#":
        path_end += 1
    path = uri[authority_end:path_end]
    if path:
        path = remove_dot_segments(path)
    return uri[:authority_end] + path + uri[path_end:]


def other_spelling(uri: str) -> str | None:
    """Why a new claim may not name `uri` (None when it may), and the spelling to use instead.

    `uri` is a valid resource (`resource.validate_resource`).
    """
    found: list[str] = []
    if (escape := _UNRESERVED_ESCAPE.search(uri)) is not None:
        found.append(f"{escape.group()!r} is the unreserved character {chr(int(escape.group()[1:], 16))!r} it escapes")
    lower = next((m for m in _LOWER_HEX_ESCAPE.finditer(uri) if not _UNRESERVED_ESCAPE.fullmatch(m.group())), None)
    if lower is not None:
        found.append(f"{lower.group()!r} is {lower.group().upper()!r} (hex digits of an escape are upper-case)")
    if _HOST_CASE.match(uri) is not None and (host := _HOST_PORT.match(uri)) is not None:
        found.append(f"the host {host.group(1)!r} is {lower_host(host.group(1))!r} (a host has no case)")
    if (port := _DEFAULT_PORT.match(uri)) is not None:
        written = port.group().rstrip("/?#")
        shown = written[written.rfind(":"):]
        found.append(f"the port {shown!r} is the scheme's default" if shown != ":" else "an empty port ':' is no port")
    if _DOT_SEGMENT.match(uri) is not None:
        path_start = uri.find("/", uri.find("://") + 3)
        segment = _DOT.search(uri, path_start)
        assert segment is not None
        found.append(f"the dot segment {segment.group()[1:].rstrip('/?#')!r} is removed")
    if not found:
        return None
    return (
        f"resource {uri[:200]!r} is another spelling of {one_spelling(uri)[:200]!r} by RFC 3986: "
        f"{'; '.join(found)}; a claim of it would be another lock on the same resource, so write "
        f"{one_spelling(uri)[:200]!r}"
    )
