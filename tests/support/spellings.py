"""Spellings of a resource URI that kubelock accepts as they stand (docs/api.md, "Which spellings are one
resource"): the SDK's check and the API server's admission rules both take each of them."""

ACCEPTED = [
    "github://acme.example/app/x",
    "GitHub://acme.example/app/x/",  # scheme case and one trailing '/': normalised, as before
    "github://acme.example//app/x",  # an empty segment: another URI by RFC 3986
    "github://acme.example/app%2Fx",  # an escaped '/': another URI by RFC 3986
    "github://acme.example:443/app/x",  # kubelock knows no default port of github
    "https://acme.example:8443/x",
    "http://acme.example:443/x",  # 443 is not http's default
    "deploy://api-prod",
    "deploy://Prod:API",  # no RFC 3986 authority (the "port" is not digits): no host to lower-case
    "x://a@b@C/x",  # two '@': no RFC 3986 authority either
    "x://a/b?Q=/./../%C3",  # the query has no segments; its letters keep their case
    "x://a/b#./",
    "x://a/.hidden/...",
    "x://caf%C3%A9",
    "x://caf\u00e9",
    "x://a?",
    "x://User@host/Path",
    "x://\uff41",
    "x:///",
    "x://./a",  # '.' as a host, not a path segment
    "x://100%",  # not an escape
]
