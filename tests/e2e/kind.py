"""helm and kubectl against the kind cluster of the end-to-end tests."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

E2E_DIR = Path(__file__).resolve().parent
REPO = E2E_DIR.parents[1]


@dataclass(frozen=True)
class Tools:
    """helm and kubectl against the kind cluster."""

    bin_dir: Path
    kubeconfig: Path

    def helm(self, *args: str) -> str:
        return self._run("helm", args)

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        return self._run("kubectl", args, stdin)

    def _run(self, tool: str, args: tuple[str, ...], stdin: str | None = None) -> str:
        argv = [str(self.bin_dir / tool), "--kubeconfig", str(self.kubeconfig), *args]
        result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=600, check=False)
        if result.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result.stdout
