"""The main job behind ``make demo``: a real search on the embedded defaults.

Not built yet: the search (issue 5) and CLI (issue 6) layers land it. Until then this exits non-zero
rather than pretend to succeed.
"""

from __future__ import annotations

import sys


def main() -> int:
    """Entry point of ``python -m promptsweep.demo``; returns the process exit code."""
    print("promptsweep demo: the search job is not built yet (issues 5 and 6).", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
