"""Run tests many times in a loop and count how often each passes: the check for a flaky test.

Each repetition is a fresh ``pytest`` process (``-p no:cacheprovider``, the README's environment), so
state cannot leak from one run to the next. ``--with-suite`` also runs the rest of the test suite in
parallel, over and over for as long as the loop lasts, to load the machine the way CI does.

Used for issue 12's two bugs (a Ctrl-C lost by a foreground ``run``; "database is locked" when
several processes open a fresh SQLite file):

    .venv/bin/python benchmarks/repeat_tests.py --times 20 \\
        "tests/search/test_jobs.py::test_killed_job_resumes_without_duplicates[SIGINT]" \\
        "tests/storage/test_queue.py::test_concurrent_first_open_creates_the_schema_once" \\
        "tests/storage/test_queue.py::test_processes_opening_a_fresh_database_at_once_create_the_schema_once"
    .venv/bin/python benchmarks/repeat_tests.py --times 20 --with-suite ...

Prints one line per run and, at the end, per test: runs, passed, failed, mean and max seconds. Exit
code 1 when any run failed. Nothing here is timed against a target.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pytest(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]


def main(argv: list[str] | None = None) -> int:
    """Run the loop; print the counts. Returns 1 when any run failed."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("tests", nargs="+", help="pytest node ids, each run --times times")
    parser.add_argument("--times", type=int, default=20, help="runs per test (default 20)")
    parser.add_argument(
        "--with-suite",
        action="store_true",
        help="run the rest of the suite (tests/, without these tests) in parallel, again and again",
    )
    parser.add_argument(
        "--suite-log", type=Path, default=None, help="with --with-suite: append the suite's output here"
    )
    args = parser.parse_args(argv)
    if args.times < 1:
        parser.error("--times: must be at least 1")

    suite = None
    suite_runs = 0

    def keep_suite_going() -> None:
        nonlocal suite, suite_runs
        if args.with_suite and (suite is None or suite.poll() is not None):
            deselect = [f"--deselect={t}" for t in args.tests]
            log = open(args.suite_log, "a") if args.suite_log else subprocess.DEVNULL  # noqa: SIM115
            suite = subprocess.Popen(
                _pytest("tests", *deselect),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: its Ray children end with it
            )
            suite_runs += 1

    results: dict[str, list[tuple[bool, float]]] = {t: [] for t in args.tests}
    try:
        for i in range(args.times):
            for test in args.tests:
                keep_suite_going()
                t0 = time.time()
                proc = subprocess.run(_pytest(test), cwd=ROOT, capture_output=True, text=True)
                seconds = time.time() - t0
                summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
                # a pass is a run that passed and skipped or xfailed nothing
                ok = (
                    proc.returncode == 0
                    and " passed" in summary
                    and not re.search(r"skipped|xfailed|xpassed|deselected", summary)
                )
                results[test].append((ok, seconds))
                status = "pass" if ok else "FAIL"
                print(f"[{i + 1}/{args.times}] {status} {seconds:6.1f} s  {test}", flush=True)
                if not ok:
                    print("\n".join(proc.stdout.splitlines()[-25:]), flush=True)
    finally:
        if suite is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(suite.pid, signal.SIGTERM)
            try:
                suite.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(suite.pid, signal.SIGKILL)

    print()
    print(f"with the rest of the suite in parallel: {'yes' if args.with_suite else 'no'}", end="")
    print(f" ({suite_runs} suite run(s) started)" if args.with_suite else "")
    failed = False
    for test, runs in results.items():
        passed = sum(ok for ok, _ in runs)
        secs = [s for _, s in runs]
        failed |= passed < len(runs)
        print(
            f"{test}: {len(runs)} runs, {passed} passed, {len(runs) - passed} failed; "
            f"{statistics.mean(secs):.1f} s mean, {max(secs):.1f} s max"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
