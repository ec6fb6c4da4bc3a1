"""`python -m cProfile`, timed by the process's CPU clock instead of the wall clock:
`python bench/cpu_cprofile.py -o FILE -m MODULE [ARGS...]`.

`python -m cProfile` bills a function for the wall time between its entry and exit, so on a loaded
machine a function that happened to run when the process lost the CPU is charged for the time it sat
in the run queue: at load 14-16, small pure functions of the operator showed 0.17 ms a call. With
`time.process_time` as the timer, a profile counts only the CPU the process used. The stats are
written when the module returns or raises (the operator stops on SIGTERM by returning).
"""

from __future__ import annotations

import cProfile
import os
import runpy
import sys
import time


def main() -> int:
    args = sys.argv[1:]
    if len(args) < 4 or args[0] != "-o" or args[2] != "-m":
        print(__doc__, file=sys.stderr)
        return 2
    output, module, rest = args[1], args[3], args[4:]
    sys.argv = [module, *rest]
    # As `python -m` would have it: the working directory first on the path, not this file's folder.
    sys.path[0] = os.getcwd()
    profile = cProfile.Profile(time.process_time)
    try:
        profile.runcall(runpy.run_module, module, run_name="__main__", alter_sys=True)
    finally:
        profile.dump_stats(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
