"""kube-apiserver's CPU profile cut into groups of functions: every sample counted once, in the first
group (in GROUPS' order) one of its stack's functions belongs to, so the groups add up to the profile.
A group's place in the order decides a sample that two groups share: a watch event's encoding counts
as watch serving, a decode inside admission as admission.

    PYTHONPATH=operator .venv/bin/python bench/pprof_groups.py PROFILE [PROFILE_B] [--per N_A [N_B]]

With `--per`, each group is also divided by that profile's number of cycles (in ms a cycle); with
two profiles, the second's groups beside the first's.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import options

# (group, pattern of a function's full name). Order matters: see the module's docstring.
GROUPS: tuple[tuple[str, str], ...] = (
    ("watch serving (dispatch, encoding, sending)",
     r"cacher\.\(\*cacheWatcher\)|cacher\.\(\*Cacher\)\.dispatch|handlers\.\(\*WatchServer\)|"
     r"handlers\.serveWatch|cacher\.\(\*watchCache\)\.processEvent|cacher\.\(\*Cacher\)\.processEvent|"
     r"cacher\.\(\*watcherBookmarkTimeBuckets\)|cachingObject"),
    ("authentication (x509, tokens)", r"apiserver/pkg/authentication|crypto/x509\.|filters\.WithAuthentication"),
    ("authorization (RBAC)", r"apiserver/pkg/authorization|plugin/pkg/auth/authorizer|filters\.WithAuthorization"),
    ("admission policies (ValidatingAdmissionPolicy, their CEL included)",
     r"pkg/admission/plugin/policy|pkg/admission/plugin/cel|pkg/admission/plugin/validatingadmissionpolicy"),
    ("CEL of the CRDs' rules", r"cel-go|apiserver/schema/cel|k8s\.io/apiserver/pkg/cel"),
    ("admission (other plugins, chain)", r"apiserver/pkg/admission"),
    ("managedFields", r"fieldmanager|structured-merge-diff"),
    # Objects read back from etcd: a create's and a delete's result, an update's current object, and
    # every event of the watch cache's own etcd watch (its object and the previous one).
    ("decode of stored objects (etcd3 results, watch cache events)",
     r"storage/etcd3 && (?:Decode|decode|Unmarshal|Coerc|coerc)"),
    ("decode of request bodies (JSON, schema coercion)",
     r"unstructuredSchemaCoercer|schemaCoercing|Decode|Unmarshal|json\.\(\*decodeState\)|sigs\.k8s\.io/json"),
    ("schema validation, defaulting, pruning",
     r"kube-openapi/pkg/validation|apiextensions-apiserver/pkg/apiserver/validation|"
     r"apiextensions-apiserver/pkg/apiserver/schema|registry/customresource\.customResourceStrategy\.Validate|"
     r"ValidateObjectMetaAccessor|ValidateObjectMeta"),
    ("encode (responses, storage)", r"Encode|Marshal|json\.\(\*encodeState\)"),
    ("etcd client (gRPC)", r"go\.etcd\.io/etcd/client|google\.golang\.org/grpc"),
    ("storage (etcd3 store, watch cache)", r"apiserver/pkg/storage"),
    ("TLS, crypto", r"^crypto/"),
    ("request handlers (other)", r"apiserver/pkg/endpoints/handlers|apiserver/pkg/registry"),
    # Every request's stack has net/http at its root: this group is what is left of serving one.
    ("HTTP, filters, API Priority and Fairness (rest)",
     r"net/http|golang\.org/x/net/http2|apiserver/pkg/server/filters|apiserver/pkg/endpoints/filters|flowcontrol"),
    ("Go GC (background)", r"runtime\.gcBgMarkWorker|runtime\.bgsweep|runtime\.bgscavenge"),
    ("Go runtime (scheduler, other)", r"^runtime\."),
)
# " && " joins patterns that must each match a function of the stack (not necessarily the same one).
_COMPILED = tuple((name, tuple(re.compile(part) for part in pattern.split(" && "))) for name, pattern in GROUPS)
OTHER = "other"

_SAMPLE = re.compile(r"^\s*(\d+)\s+(\d+):((?:\s+\d+)+)\s*$")
_LOCATION = re.compile(r"^\s*(\d+): 0x[0-9a-f]+ (?:M=\d+ )?(\S+)")
_INLINED = re.compile(r"^\s{10,}(\S+) \S+:\d+")


def parse_raw(text: str) -> tuple[list[tuple[int, list[int]]], dict[int, list[str]]]:
    """`go tool pprof -raw`'s samples (CPU nanoseconds, location ids leaf first) and each location's
    functions (inlined ones included)."""
    samples: list[tuple[int, list[int]]] = []
    locations: dict[int, list[str]] = {}
    section, current = "", -1
    for line in text.splitlines():
        if line.startswith("Samples:"):
            section = "samples"
        elif line.startswith("Locations"):
            section = "locations"
        elif line.startswith("Mappings"):
            section = "mappings"
        elif section == "samples" and (match := _SAMPLE.match(line)):
            samples.append((int(match[2]), [int(x) for x in match[3].split()]))
        elif section == "locations":
            if match := _LOCATION.match(line):
                current = int(match[1])
                locations[current] = [match[2]]
            elif (match := _INLINED.match(line)) and current >= 0:
                locations[current].append(match[1])
    return samples, locations


def group_of(functions: list[str]) -> str:
    for name, patterns in _COMPILED:
        if all(any(pattern.search(f) for f in functions) for pattern in patterns):
            return name
    return OTHER


def grouped(text: str) -> dict[str, float]:
    """CPU seconds by group of one profile's `-raw` text, the largest first."""
    samples, locations = parse_raw(text)
    out: dict[str, float] = {}
    for nanos, stack in samples:
        group = group_of([f for loc in stack for f in locations.get(loc, [])])
        out[group] = out.get(group, 0.0) + nanos / 1e9
    return dict(sorted(out.items(), key=lambda item: -item[1]))


def raw_text(profile: Path, binary: Path) -> str:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    done = subprocess.run([go, "tool", "pprof", "-raw", str(binary), str(profile)],
                          capture_output=True, text=True, check=True)
    return done.stdout


def fetch(server: str, opener: urllib.request.OpenerDirector, seconds: int, out: Path) -> Path:
    """kube-apiserver's CPU profile over the next `seconds` (the server must run with --profiling)."""
    with opener.open(f"{server}/debug/pprof/profile?seconds={seconds}", timeout=seconds + 60) as response:
        out.write_bytes(response.read())
    return out


def table(profiles: list[dict[str, float]], cycles: list[float] | None) -> str:
    names = [n for n, _ in GROUPS] + [OTHER]
    head = "| group | " + " | ".join(
        f"profile {i + 1}: s, share" + (", ms a cycle" if cycles else "") for i in range(len(profiles))) + " |"
    rows = [head, "|---|" + "---|" * len(profiles)]
    for name in [*names, "total"]:
        cells = []
        for i, groups in enumerate(profiles):
            total = sum(groups.values()) or 1.0
            value = total if name == "total" else groups.get(name, 0.0)
            cell = f"{value:.2f} s, {100 * value / total:.1f} %"
            if cycles:
                cell += f", {1000 * value / cycles[i]:.2f}"
            cells.append(cell)
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> int:
    parser = options.parser(__doc__)
    parser.add_argument("profiles", type=Path, nargs="+")
    parser.add_argument("--per", type=float, nargs="*", default=None, help="cycles in each profile")
    parser.add_argument("--binary", type=Path, default=None, help="kube-apiserver (default: the test bed's)")
    args = parser.parse_args()
    if args.binary is None:
        from kubelock.testbed import find_binaries
        args.binary = find_binaries() / "kube-apiserver"
    groups = [grouped(raw_text(p, args.binary)) for p in args.profiles]
    print(table(groups, args.per))
    return 0


if __name__ == "__main__":
    sys.exit(main())
