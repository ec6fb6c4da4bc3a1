"""bench/cpu_cprofile.py: a module run under cProfile timed by the process's CPU clock, its stats
written when the module exits, also by SystemExit (the operator returns on SIGTERM; a CLI exits)."""

from __future__ import annotations

import pstats
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_the_stats_of_a_module_that_sleeps_count_cpu_not_wall_time(tmp_path: Path) -> None:
    module = tmp_path / "sleeper.py"
    module.write_text("import sys, time\ntime.sleep(0.5)\nsys.exit(3)\n")
    out = tmp_path / "sleeper.prof"
    done = subprocess.run(
        [sys.executable, str(BENCH / "cpu_cprofile.py"), "-o", str(out), "-m", "sleeper"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 3, done.stderr
    stats = pstats.Stats(str(out))
    slept = [v for k, v in stats.stats.items() if k[2] == "<built-in method time.sleep>"]  # type: ignore[attr-defined]
    assert len(slept) == 1
    # By the wall clock the sleep is 0.5 s; by the CPU clock next to nothing.
    assert slept[0][2] < 0.1


def test_wrong_arguments_print_the_usage(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(BENCH / "cpu_cprofile.py"), "x"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "cpu_cprofile.py -o FILE -m MODULE" in done.stderr
