"""`kubelock-operator`: start the operator, or say plainly which extra is missing.

`pip install kubelock` installs the SDK and the CLI only (what an agent needs); the operator's
dependencies come with `pip install 'kubelock[operator]'`.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence

OPERATOR_MODULES = ("kopf", "prometheus_client")
# Client libraries kopf imports whenever they are installed, only to recognise their objects, which
# the operator never hands it. Where they are installed beside the operator (a development
# environment, an image that also serves other tools) they were 40 % of kopf's import, and the import
# is part of every restart.
UNUSED_BY_KOPF = ("kubernetes", "kubernetes_asyncio", "pykube")


def missing() -> list[str]:
    return [name for name in OPERATOR_MODULES if importlib.util.find_spec(name) is None]


def main(argv: Sequence[str] | None = None) -> None:
    absent = missing()
    if absent:
        print(
            f"kubelock-operator: the operator needs {', '.join(absent)}, which this installation lacks; "
            "install it with: pip install 'kubelock[operator]'",
            file=sys.stderr,
        )
        sys.exit(2)
    for name in UNUSED_BY_KOPF:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # `import name` fails: kopf does without
    # The priming LISTs start before kopf and aiohttp are imported (`kubelock.operator.start`).
    from kubelock.operator.start import begin

    start = begin(argv)
    from kubelock.operator.main import main as run

    run(argv, start)
