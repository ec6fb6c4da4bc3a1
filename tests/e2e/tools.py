"""helm and kubectl against the end-to-end tests' cluster (a real test-bed node, or kind)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

E2E_DIR = Path(__file__).resolve().parent
REPO = E2E_DIR.parents[1]
RELEASE = "kubelock"
RELEASE_NAMESPACE = "kubelock-system"
#: What the test log reports at the end (images, how the operator pod runs, timings). Here rather
#: than in conftest.py, which pytest may load under another module name than the tests import.
REPORT: list[str] = []


@dataclass(frozen=True)
class Tools:
    """helm and kubectl as the cluster's admin."""

    bin_dir: Path
    kubeconfig: Path

    def helm(self, *args: str) -> str:
        return self._run("helm", args)

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        return self._run("kubectl", args, stdin)

    def run(self, tool: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Runs helm or kubectl and returns the result, whatever its exit code."""
        argv = [str(self.bin_dir / tool), "--kubeconfig", str(self.kubeconfig), *args]
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=600, check=False)

    def _run(self, tool: str, args: tuple[str, ...], stdin: str | None = None) -> str:
        result = self.run(tool, *args, stdin=stdin)
        if result.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result.stdout
