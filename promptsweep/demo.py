"""The main job behind ``make demo``: a real search on real data, start to finish.

``python -m promptsweep.demo --out demo-out``:

1. opens a fresh SQLite database ``demo-out/promptsweep.db`` (``--db`` for another);
2. submits ``examples/fine-foods-minilm.yaml`` (the embedded default spec when run outside a
   checkout): Amazon Fine Foods reviews (great/other) on the frozen all-MiniLM-L6-v2, all three prompt
   methods and both P-tuning encoders in one conditional space, TPE + ASHA, sized for 2 CPU cores;
3. runs the search in this process (Ray Tune on the local cores), recording every trial;
4. prints the leaderboard and the best trial per method;
5. exports the best adapter to ``demo-out/best-adapter/``, writes ``demo-out/report.html``;
6. reloads the export with plain ``PeftModel.from_pretrained`` and evaluates it on the *whole* test
   split (1,000 reviews; the search itself saw a capped subsample), against that split's
   majority-class baseline (0.658 on Fine Foods); writes ``demo-out/summary.json`` and prints how to
   open optuna-dashboard on the same database.

Exit code 0 when the search finished with at least one complete trial, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from promptsweep.exceptions import PromptsweepError

EXAMPLE_SPEC = Path(__file__).resolve().parent.parent / "examples" / "fine-foods-minilm.yaml"


def _promptsweep_command() -> str:
    """How to call this promptsweep's CLI: the console script beside this interpreter, if there is one."""
    script = Path(sys.executable).parent / "promptsweep"
    if script.is_file():
        try:
            return str(script.relative_to(Path.cwd()))
        except ValueError:
            return str(script)
    return f"{sys.executable} -m promptsweep"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m promptsweep.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder (default demo-out)")
    parser.add_argument(
        "--spec", type=Path, default=None, help="job spec (default examples/fine-foods-minilm.yaml)"
    )
    parser.add_argument("--db", default=None, help="database URL (default sqlite:///OUT/promptsweep.db)")
    parser.add_argument("--trials", type=int, default=None, help="override budget.num_trials")
    parser.add_argument("--no-progress", action="store_true", help="hide the per-trial progress output")
    parser.add_argument(
        "--no-full-test", action="store_true", help="skip evaluating the export on the whole test split"
    )
    return parser.parse_args(argv)


def _load_spec(path: Path | None, out: Path, trials: int | None) -> Any:
    from promptsweep.search import default_spec, load_spec

    if path is not None:
        spec = load_spec(path)
    elif EXAMPLE_SPEC.is_file():
        spec = load_spec(EXAMPLE_SPEC)
    else:
        spec = default_spec()
    update: dict[str, Any] = {"output_dir": str((out / "runs").absolute())}
    if trials is not None:
        update["budget"] = spec.budget.model_copy(update={"num_trials": trials})
    return spec.model_copy(update=update)


def _budget_text(spec: Any) -> str:
    b = spec.budget
    parts = [
        f"{b.compute_budget_s:,.0f} trial-s" if b.compute_budget_s else None,
        f"{b.time_budget_s:,.0f} s wall" if b.time_budget_s else None,
        f"{b.num_trials} trials" if b.num_trials else None,
    ]
    return ", ".join(p for p in parts if p)


def full_test_metrics(spec: Any, adapter_dir: Path | str) -> tuple[dict[str, float], float, int]:
    """Evaluate an exported adapter on the spec's whole test split (no ``max_eval_examples`` cap).

    Reloads it with plain ``PeftModel.from_pretrained`` (through ``methods.evaluate_adapter``).

    Returns:
        (metrics, majority-class accuracy of that split, number of test examples).
    """
    import transformers

    from promptsweep.methods import evaluate_adapter
    from promptsweep.search import job_inputs

    transformers.logging.set_verbosity_error()  # long reviews are truncated to max_length on purpose
    inputs = job_inputs(spec, capped=False)
    metrics = evaluate_adapter(inputs, adapter_dir, split="test")
    return metrics, float(inputs.majority_accuracy["test"]), int(inputs.counts["test"])


def run_demo(
    out: Path,
    *,
    spec_path: Path | None = None,
    db_url: str | None = None,
    trials: int | None = None,
    progress: bool = True,
    full_test: bool = True,
) -> dict[str, Any]:
    """Run the demo job and write its outputs under ``out``; return the summary (also ``summary.json``).

    Raises:
        PromptsweepError: the spec, the data, the database or the search failed (the message says how).
    """
    from promptsweep._cli_jobs import print_job_summary
    from promptsweep.cli import _rows_table, console
    from promptsweep.dashboards import leaderboard_rows, write_report
    from promptsweep.export import export_adapter
    from promptsweep.search import run_job, submit
    from promptsweep.storage import Storage

    out = out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    db_url = db_url or f"sqlite:///{out / 'promptsweep.db'}"
    storage = Storage(db_url)
    spec = _load_spec(spec_path, out, trials)
    console.rule(f"promptsweep demo: {spec.name}")
    console.print(
        f"model {spec.model} ({spec.task}), data {spec.dataset.source}, methods {spec.space.methods}, "
        f"budget {_budget_text(spec)}, scheduler {spec.scheduler.name}, database {db_url}"
    )
    started = time.monotonic()
    job_id = submit(spec, storage)
    run_job(job_id, storage, progress=progress)
    seconds = time.monotonic() - started
    job = storage.get_job(job_id)
    trials_all = storage.list_trials(job_id)
    ranked = storage.leaderboard(job_id)

    console.rule("leaderboard (validation accuracy)")
    rows = leaderboard_rows(storage, job_id)
    if rows:
        console.print(_rows_table(rows))
        console.print(
            _rows_table(leaderboard_rows(storage, job_id, per_method=True), title="best per method")
        )
    print_job_summary(job)
    summary: dict[str, Any] = {
        "job_id": job_id,
        "status": job.status.value,
        "error": job.error,
        "db_url": db_url,
        "wall_seconds": round(seconds, 1),
        "trials": len(trials_all),
        "states": {
            s: sum(1 for t in trials_all if t.state.value == s) for s in ("complete", "pruned", "fail")
        },
    }
    if not ranked:
        console.print(f"[bold red]no trial completed[/] (job status {job.status.value}: {job.error})")
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    selected = (job.summary or {}).get("selected_trial")
    best = storage.get_trial(job_id, int(selected)) if selected is not None else ranked[0]
    summary.update(
        plan=(job.summary or {}).get("plan"),
        floors=(job.summary or {}).get("floors"),
        finalists=(job.summary or {}).get("finalists"),
        floor_warning=(job.summary or {}).get("floor_warning"),
        floor_separation=(job.summary or {}).get("floor_separation"),
        kept_state=(job.summary or {}).get("kept_state"),
    )
    summary.update(
        best_trial=best.number,
        best_method=best.variant,
        best_params=best.params,
        best_validation=best.metrics,
        best_test=best.test_metrics,
        best_trainable_params=best.trainable_params,
    )
    export = export_adapter(storage, job_id, out / "best-adapter", force=True)
    report = write_report(storage, job_id, out / "report.html")
    summary.update(export_dir=str(export.out_dir), report=str(report))
    if full_test:
        console.print("evaluating the exported adapter on the whole test split ...")
        metrics, majority, n_test = full_test_metrics(spec, export.out_dir)
        summary.update(full_test=metrics, full_test_examples=n_test, full_test_majority=majority)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")

    console.rule("result")
    metric = job.objective_metric or "accuracy"
    val = best.value
    test = (best.test_metrics or {}).get(metric)
    console.print(
        f"selected: trial {best.number} ({best.variant}), {best.trainable_params:,} trainable parameters; "
        f"validation {metric} {val:.4f}"
        + (f", test {metric} {test:.4f} (the search's capped test subsample)" if test is not None else "")
    )
    if "full_test" in summary:
        full, majority = summary["full_test"].get(metric), summary["full_test_majority"]
        verdict = "beats" if full > majority else "does NOT beat"
        console.print(
            f"exported adapter on the whole test split ({summary['full_test_examples']:,} reviews): "
            f"{metric} {full:.4f}; it {verdict} the majority-class baseline {majority:.3f}"
        )
    states = ", ".join(f"{n} {state}" for state, n in summary["states"].items())
    console.print(f"{summary['trials']} trials ({states}) in {seconds / 60:.1f} min")
    console.print(f"best adapter exported to {export.out_dir} (load: see its README.md)")
    console.print(f"report: {report}")
    console.print(
        "review the study in optuna-dashboard:\n"
        f"  {_promptsweep_command()} --db {db_url} dashboard   # then open http://127.0.0.1:8080/"
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m promptsweep.demo``; returns the process exit code."""
    import logging

    from promptsweep._logging import enable_default_handler

    args = _parse_args(argv)
    enable_default_handler(logging.WARNING)
    try:
        summary = run_demo(
            args.out,
            spec_path=args.spec,
            db_url=args.db,
            trials=args.trials,
            progress=not args.no_progress,
            full_test=not args.no_full_test,
        )
    except PromptsweepError as exc:
        print(f"promptsweep demo failed: {exc}", file=sys.stderr)
        return 1
    return 0 if summary.get("best_trial") is not None else 1


if __name__ == "__main__":
    sys.exit(main())
