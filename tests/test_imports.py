"""Import cost: the package and the CLI's help must not load torch, transformers, peft or ray.

Run in a fresh interpreter (as typer's tests/test_rich_import.py does), since this test process may
already have imported them.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from promptsweep._imports import HEAVY_MODULES

_PROBE = """
import json, sys
{body}
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def _heavy_modules_loaded(body: str) -> list[str]:
    code = _PROBE.format(body=body, heavy=HEAVY_MODULES)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "body",
    [
        "import promptsweep",
        "import promptsweep.methods, promptsweep.search, promptsweep.storage, promptsweep.dashboards",
        "import promptsweep.cli",
    ],
)
def test_import_loads_no_heavy_module(body: str) -> None:
    assert _heavy_modules_loaded(body) == []


def test_cli_help_loads_no_heavy_module() -> None:
    body = (
        "from typer.testing import CliRunner\n"
        "from promptsweep.cli import app\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'Usage' in r.output\n"
    )
    assert _heavy_modules_loaded(body) == []


def test_probe_detects_a_heavy_import() -> None:
    # The probe itself must be able to fail: importing torch is seen.
    assert _heavy_modules_loaded("import torch") == ["torch"]
