"""Training precision names and the CPU's native-bf16 check (no torch here: the search layer calls it at
submit time, before any trial loads torch).

The torch side - CUDA's check, :func:`~promptsweep.methods.resolve_precision` and the training under the
resolved precision - lives in ``_train.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

#: ``TrainBudget.precision`` values: ``auto`` = bf16 where the device computes it natively, else fp32.
PRECISIONS = ("auto", "fp32", "bf16")

#: CPU feature flags (as Linux names them in /proc/cpuinfo) that give native bf16 arithmetic: AVX-512
#: BF16 (Intel Cooper Lake+, AMD Zen 4+) and AMX-BF16 (Intel Sapphire Rapids+). Without them oneDNN
#: emulates bf16 in fp32 registers, slower than fp32 itself.
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def read_cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags the kernel reports (the first ``flags`` line of ``cpuinfo``).

    Empty where there is no such file (macOS, Windows) or no ``flags`` line (e.g. ARM's ``Features``):
    those CPUs count as without native bf16 (not measured).
    """
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def cpu_bf16_supported(flags: Iterable[str] | None = None) -> bool:
    """Whether the CPU computes bf16 natively (has one of :data:`CPU_BF16_FLAGS`).

    Args:
        flags: the CPU's feature flags; default :func:`read_cpu_flags` (this machine's).
    """
    present = read_cpu_flags() if flags is None else frozenset(flags)
    return not present.isdisjoint(CPU_BF16_FLAGS)
