"""GPU check (issue 13, part 5): fractional GPUs, bf16 and a SmolLM2 trial, on one NVIDIA GPU.

What it checks, through promptsweep's own API (``promptsweep.search.submit`` / ``run_job`` on a
``promptsweep.storage.Storage`` over a SQLite file in a temporary folder), exactly as a user's job runs:

1. **Packing.** One job of 4 trials at ``resources.gpus_per_trial: 0.25`` and
   ``max_concurrent_trials: 4`` on the frozen all-MiniLM-L6-v2 (``model: minilm``) on the Fine Foods
   reviews (``fine-foods``, shipped offline), ``precision: bf16``, no early stopping: the paper defaults
   of prompt tuning, prefix tuning and P-tuning (MLP) plus a P-tuning (LSTM) config, each trained for
   ``--minilm-steps`` steps (~20-40 s per trial on a current GPU). From the stored trial records it
   asserts that every trial completed and that all 4 ran at the same time on the one GPU (the latest
   ``started_at`` lies before the earliest ``finished_at``).
2. **SmolLM2.** One trial (``num_trials: 1``) of the SmolLM2-135M-Instruct verbalizer of
   ``benchmarks/specs/smollm2.yaml`` on the whole GPU, bf16: it must complete.
3. **Numbers.** Per trial: the method, its state, steps, examples/s (steps x batch size / training
   seconds, evaluations excluded), peak GPU memory (CUDA peak allocated in the trial's process) and the
   precision it trained in (from the adapter's ``promptsweep_adapter.json``), which must be bf16.

Each check prints ``PASS`` or ``FAIL``; the script exits 1 on any FAIL, 0 when all pass. Without a CUDA
GPU visible to torch it refuses with one line and exit status 2.

Run it from the repository root on the GPU machine (the venv needs a CUDA build of torch; see README):

    benchmarks/gpu_check.sh                      # .venv/bin/python, 290 s timeout
    PYTHON=/path/to/python benchmarks/gpu_check.sh
    .venv/bin/python benchmarks/gpu_check.py     # the same, without the timeout

Expected runtime on one GPU: ~2-3 minutes (Ray starts twice, the first run also converts SmolLM2 from
its GGUF, ~15 s, and tokenizes Fine Foods for both models; both are cached under
``$PROMPTSWEEP_HOME/cache`` for later runs). Each job also has a wall-clock cap (``time_budget_s``:
100 s and 60 s): on a slow GPU the trials end at the cap, still complete and evaluated, so the whole
check stays under the wrapper's 290 s; a trial that trained fewer steps than asked is shown as such.
The default step counts (``--minilm-steps 2000``, ``--smollm2-steps 300``) are estimates, not yet
measured on a GPU: where a MiniLM trial's ``train s`` is far from 20-40 s, set them accordingly.

``--cpu-smoke`` runs the same flow on the CPU (``gpus_per_trial: 0``, tiny random models from
``promptsweep.methods.testing.make_tiny_model``, a few steps) only to check this script's own code
paths; its numbers mean nothing. ``--keep`` keeps the temporary folder (database, trial outputs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from promptsweep.exceptions import PromptsweepError

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO / "benchmarks" / "specs"
#: Exit status when no GPU is visible (and --cpu-smoke is not given).
EXIT_NO_GPU = 2
#: Wall-clock caps of the two jobs on the GPU (seconds; see the module docstring).
MINILM_CAP_S = 100.0
SMOLLM2_CAP_S = 60.0
#: The fourth config of the packing job (the paper defaults give the other three).
LSTM_CONFIG = {"method": "p_tuning", "encoder_type": "LSTM", "num_virtual_tokens": 20, "learning_rate": 1e-3}


@dataclass
class Checks:
    """PASS/FAIL lines, printed as they are made."""

    failed: list[str] = field(default_factory=list)
    passed: int = 0

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        print(f"{'PASS' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else ""), flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed.append(name)
        return ok


def _nvidia_gpu_entries() -> int:
    """GPUs the NVIDIA driver lists (without loading torch)."""
    proc = Path("/proc/driver/nvidia/gpus")
    return len(list(proc.iterdir())) if proc.is_dir() else 0


def _load_yaml(name: str) -> dict[str, Any]:
    return yaml.safe_load((SPECS / name).read_text(encoding="utf-8"))


def _common(spec: dict[str, Any], *, out: Path, precision: str, cap_s: float) -> dict[str, Any]:
    """Overrides shared by both jobs: no planning, no floors, no re-scoring, outputs in ``out``."""
    budget = {k: v for k, v in spec["budget"].items() if k not in ("compute_budget_s", "time_budget_s")}
    spec["budget"] = {**budget, "time_budget_s": cap_s}
    spec["scheduler"] = {"name": "none"}
    spec["sampler"] = {"name": "random"}
    spec["precision"] = precision
    spec["floors"] = False
    spec["selection"] = {"finalists": 1}
    spec["output_dir"] = str(out)
    spec["seed"] = 0
    return spec


def minilm_spec(args: argparse.Namespace, out: Path, precision: str, tiny: Path | None) -> dict[str, Any]:
    """Check 1's job: benchmarks/specs/minilm.yaml, 4 trials at 0.25 GPU each, all at once."""
    spec = _common(_load_yaml("minilm.yaml"), out=out, precision=precision, cap_s=MINILM_CAP_S)
    spec["name"] = "gpu-check-minilm-packing"
    spec["budget"].update(num_trials=4, max_steps=args.minilm_steps, eval_every_steps=args.minilm_steps)
    spec["warm_start"] = True  # prefix tuning, prompt tuning, P-tuning (MLP): the paper defaults
    spec["warm_start_configs"] = [LSTM_CONFIG]
    cpus = os.cpu_count() or 1
    spec["resources"] = {
        "cpus_per_trial": min(1.0, cpus / 4),
        "gpus_per_trial": 0.25,
        "max_concurrent_trials": 4,
        "torch_threads": 1,
    }
    if tiny is not None:  # --cpu-smoke
        spec["model"] = str(tiny)
        spec["budget"].update(batch_size=8, eval_batch_size=32)
        spec["dataset"].update(max_train_examples=160, max_eval_examples=32, max_length=32)
        spec["resources"].update(gpus_per_trial=0, cpus_per_trial=0.5, num_cpus=2)
    return spec


def smollm2_spec(args: argparse.Namespace, out: Path, precision: str, tiny: Path | None) -> dict[str, Any]:
    """Check 2's job: benchmarks/specs/smollm2.yaml, one trial on the whole GPU."""
    spec = _common(_load_yaml("smollm2.yaml"), out=out, precision=precision, cap_s=SMOLLM2_CAP_S)
    spec["name"] = "gpu-check-smollm2-verbalizer"
    spec["budget"].update(num_trials=1, max_steps=args.smollm2_steps, eval_every_steps=args.smollm2_steps)
    spec["resources"] = {"cpus_per_trial": 1, "gpus_per_trial": 1, "max_concurrent_trials": 1}
    if tiny is not None:  # --cpu-smoke
        spec["model"] = str(tiny)
        spec["budget"].update(batch_size=4, eval_batch_size=16)
        spec["dataset"].update(max_train_examples=80, max_eval_examples=16, max_length=32)
        spec["resources"].update(gpus_per_trial=0, num_cpus=2)
    return spec


def _precision_of(adapter_dir: str | None) -> str:
    """The precision a trial trained in, as its adapter's ``promptsweep_adapter.json`` records it."""
    if not adapter_dir:
        return "?"
    try:
        from promptsweep.methods import local_adapter_dir  # a bucket's adapter is fetched first

        meta = json.loads(
            (local_adapter_dir(adapter_dir) / "promptsweep_adapter.json").read_text(encoding="utf-8")
        )
    except (OSError, ValueError, PromptsweepError):
        return "?"
    return str(meta.get("precision") or "?")


class GpuProcessSampler:
    """Counts the compute processes ``nvidia-smi`` shows on the GPU, once a second (information only:
    inside a container nvidia-smi may show none)."""

    def __init__(self) -> None:
        self.max_seen = 0
        self.available = shutil.which("nvidia-smi") is not None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                text = subprocess.run(
                    ["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                    check=False,
                ).stdout
            except (OSError, subprocess.SubprocessError):
                continue
            self.max_seen = max(self.max_seen, len([ln for ln in text.splitlines() if ln.strip()]))

    def __enter__(self) -> GpuProcessSampler:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


def run_one(spec: dict[str, Any], storage: Any, checks: Checks, label: str) -> tuple[int | None, Any]:
    """Submit and run one job; return ``(job_id, outcome)`` (``None`` for what did not happen)."""
    from promptsweep.search import run_job, submit

    print(f"\n== {label}: {spec['name']} (model {spec['model']}, precision {spec['precision']})", flush=True)
    t0 = time.time()
    try:
        job_id = submit(spec, storage)
    except Exception as exc:
        checks.check(f"{label}: submit", False, f"{type(exc).__name__}: {exc}")
        return None, None
    try:
        outcome = run_job(job_id, storage, progress=False)
    except Exception as exc:
        checks.check(f"{label}: job ran", False, f"{type(exc).__name__}: {exc}")
        return job_id, None
    print(f"job {job_id}: {outcome.status} in {time.time() - t0:.0f} s, trials {outcome.counts}", flush=True)
    checks.check(f"{label}: job succeeded", outcome.status == "succeeded", outcome.error or outcome.status)
    return job_id, outcome


def report_trials(storage: Any, job_id: int, spec: dict[str, Any], gpu: bool) -> list[Any]:
    """Print one line per trial of the job; return its trial records."""
    rows = storage.list_trials(job_id)
    batch = int(spec["budget"]["batch_size"])
    asked = int(spec["budget"]["max_steps"])
    t0 = min((r.started_at for r in rows if r.started_at), default=None)
    memory = "peak GPU MiB" if gpu else "peak RSS MiB"
    print(
        f"{'trial':>5}  {'method':<26} {'state':<9} {'steps':>9} {'train s':>8} {'ex/s':>8} "
        f"{memory:>12} {'precision':<9} {'start..end s':>13}  {spec['objective']['metric']:>8}"
    )
    total_eps, hosts = 0.0, set()
    for r in rows:
        eps = (r.steps or 0) * batch / r.train_seconds if r.train_seconds else None
        span = (
            f"{(r.started_at - t0).total_seconds():5.1f}..{(r.finished_at - t0).total_seconds():5.1f}"
            if t0 and r.started_at and r.finished_at
            else "?"
        )
        steps = f"{r.steps if r.steps is not None else '?'}/{asked}"
        print(
            f"{r.number:>5}  {(r.variant or r.method or '?'):<26} {r.state.value:<9} {steps:>9} "
            f"{(r.train_seconds or 0):8.1f} {(f'{eps:.1f}' if eps else '?'):>8} "
            f"{((r.peak_memory_bytes or 0) / 2**20):12.0f} {_precision_of(r.adapter_dir):<9} {span:>13}  "
            f"{(f'{r.value:.3f}' if r.value is not None else '-'):>8}",
            flush=True,
        )
        total_eps += eps or 0.0
        hosts.add(getattr(r, "node_host", None) or "?")  # recorded where the storage has the field
        if r.error:
            print(f"       error: {r.error.strip().splitlines()[-1][:200]}")
        if r.steps is not None and r.steps < asked and r.state.value == "complete":
            print(f"       note: trained {r.steps} of {asked} steps (ended by the job's wall-clock cap)")
    if len(rows) > 1:
        print(f"all trials together: {total_eps:.1f} examples/s")
    if hosts - {"?"}:
        print(f"ran on: {', '.join(sorted(hosts))}")
    return rows


def check_trials(
    rows: list[Any], checks: Checks, label: str, *, expected: int, precision: str, gpu: bool
) -> None:
    complete = [r for r in rows if r.state.value == "complete"]
    checks.check(
        f"{label}: {expected} trial(s) completed",
        len(rows) == expected and len(complete) == expected,
        f"{len(complete)} of {len(rows)} complete ({', '.join(r.state.value for r in rows) or 'none'})",
    )
    used = {_precision_of(r.adapter_dir) for r in complete}
    checks.check(
        f"{label}: trained in {precision}",
        bool(complete) and used == {precision},
        f"precision recorded in the adapters: {sorted(used) or 'none'}",
    )
    if gpu:
        checks.check(
            f"{label}: peak GPU memory recorded",
            bool(complete) and all((r.peak_memory_bytes or 0) > 0 for r in complete),
            ", ".join(f"{(r.peak_memory_bytes or 0) / 2**20:.0f} MiB" for r in complete),
        )


def check_overlap(rows: list[Any], checks: Checks, label: str) -> None:
    """All trials ran at once: the last start lies before the first end."""
    spans = [(r.started_at, r.finished_at) for r in rows]
    if len(rows) != 4 or any(s is None or e is None for s, e in spans):
        checks.check(f"{label}: 4 trials overlapped in time", False, "not 4 trials with start and end times")
        return
    last_start = max(s for s, _ in spans)
    first_end = min(e for _, e in spans)
    shared = (first_end - last_start).total_seconds()
    longest = max((e - s).total_seconds() for s, e in spans)
    checks.check(
        f"{label}: 4 trials overlapped in time",
        shared > 0,
        f"all 4 running together for {shared:.1f} s (the longest trial took {longest:.1f} s)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cpu-smoke", action="store_true", help="no GPU: tiny models on the CPU (checks this script only)"
    )
    parser.add_argument("--minilm-steps", type=int, default=None, help="steps per MiniLM trial (GPU: 2000)")
    parser.add_argument(
        "--smollm2-steps", type=int, default=None, help="steps of the SmolLM2 trial (GPU: 300)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (database, outputs)")
    args = parser.parse_args(argv)
    smoke = args.cpu_smoke
    args.minilm_steps = args.minilm_steps or (12 if smoke else 2000)
    args.smollm2_steps = args.smollm2_steps or (6 if smoke else 300)

    if not smoke and "CUDA_VISIBLE_DEVICES" not in os.environ and _nvidia_gpu_entries() > 1:
        # one GPU: so that the 4 packed trials cannot spread over several
        os.environ["CUDA_VISIBLE_DEVICES"] = "0"
        print("note: several GPUs; this check uses GPU 0 (CUDA_VISIBLE_DEVICES=0)")

    import torch

    gpu = not smoke
    if gpu and not torch.cuda.is_available():
        print(
            f"gpu_check: no CUDA GPU visible to torch {torch.__version__} (built for CUDA "
            f"{torch.version.cuda}); run it on a machine with an NVIDIA GPU and a CUDA build of torch, "
            "or pass --cpu-smoke to check this script on the CPU",
            file=sys.stderr,
        )
        return EXIT_NO_GPU

    from promptsweep.methods import cpu_bf16_supported
    from promptsweep.storage import Storage

    checks = Checks()
    if gpu:
        name = torch.cuda.get_device_name(0)
        total = torch.cuda.get_device_properties(0).total_memory / 2**30
        print(f"GPU: {name}, {total:.0f} GiB; torch {torch.__version__}, CUDA {torch.version.cuda}")
        if not checks.check("GPU computes bf16", torch.cuda.is_bf16_supported(), name):
            return 1
        precision = "bf16"
    else:
        precision = "bf16" if cpu_bf16_supported() else "fp32"
        print(f"--cpu-smoke: tiny models on the CPU, precision {precision}; the numbers mean nothing")

    # A TERM (the wrapper's timeout) interrupts the run like Ctrl-C: run_job marks the job interrupted
    # and shuts its Ray down instead of leaving the trials' processes behind.
    def _interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    # Tune's warning about frequent experiment snapshots (every trial checkpoints its adapter once)
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    work = Path(tempfile.mkdtemp(prefix="promptsweep-gpu-check-"))
    print(f"work folder: {work}{' (kept)' if args.keep else ''}", flush=True)
    started = time.time()
    try:
        tiny_encoder = tiny_decoder = None
        if smoke:
            # caches of the tiny models' tokenized data stay in the work folder
            os.environ["PROMPTSWEEP_HOME"] = str(work / "home")
            from promptsweep.methods.testing import make_tiny_model

            tiny_encoder = make_tiny_model(work / "tiny-encoder", "encoder")
            tiny_decoder = make_tiny_model(work / "tiny-decoder", "decoder")
        storage = Storage(f"sqlite:///{work / 'gpu-check.db'}")

        # 1. four trials at 0.25 GPU each, bf16, at the same time
        spec = minilm_spec(args, work / "runs", precision, tiny_encoder)
        sampler = GpuProcessSampler() if gpu else None
        with sampler or contextlib.nullcontext():
            job_id, _ = run_one(spec, storage, checks, "packing")
        if job_id is not None:
            rows = report_trials(storage, job_id, spec, gpu)
            check_trials(rows, checks, "packing", expected=4, precision=precision, gpu=gpu)
            check_overlap(rows, checks, "packing")
            if sampler is not None and sampler.available:
                print(
                    f"info: nvidia-smi showed up to {sampler.max_seen} compute process(es) on the GPU at once"
                )

        # 2. one SmolLM2 verbalizer trial
        spec = smollm2_spec(args, work / "runs", precision, tiny_decoder)
        job_id, _ = run_one(spec, storage, checks, "smollm2")
        if job_id is not None:
            rows = report_trials(storage, job_id, spec, gpu)
            check_trials(rows, checks, "smollm2", expected=1, precision=precision, gpu=gpu)
        storage.close()
    except KeyboardInterrupt:
        checks.check(
            "finished", False, f"interrupted (Ctrl-C or SIGTERM) after {time.time() - started:.0f} s"
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    wall = time.time() - started
    if checks.failed:
        print(f"\nFAIL: {len(checks.failed)} check(s) failed in {wall:.0f} s: {', '.join(checks.failed)}")
        return 1
    print(f"\nPASS: all {checks.passed} checks in {wall:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
