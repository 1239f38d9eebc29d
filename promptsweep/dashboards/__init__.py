"""promptsweep.dashboards: review a job in optuna-dashboard, as tables, or as an HTML report.

- :func:`launch_dashboard` starts optuna-dashboard on promptsweep's database (127.0.0.1 by default) in
  a child process; :func:`run_dashboard` runs it in the foreground and stops it on SIGTERM / SIGINT;
  :func:`prepare_studies` names each study's objectives and attaches each trial's adapter that lacks
  it as an Optuna artifact of the trial (:func:`attach_adapter_artifacts`).
- :func:`leaderboard_rows`, :func:`job_summary`, :func:`trial_row` flatten the storage layer's ranking
  into rows for the CLI, the API and the report.
- :func:`write_report` writes a self-contained HTML report (leaderboard, best per method, a per-method
  comparison, Pareto front, optimization history, learning curves, parameter importances).

Nothing here imports torch, transformers, peft or ray.
"""

from promptsweep.dashboards._artifacts import attach_adapter_artifacts, prepare_studies
from promptsweep.dashboards._launch import (
    DashboardProcess,
    dashboard_command,
    free_port,
    launch_dashboard,
    run_dashboard,
)
from promptsweep.dashboards._leaderboard import (
    describe_method,
    job_metric,
    job_summary,
    leaderboard_rows,
    state_counts,
    trial_row,
    unranked_rows,
)
from promptsweep.dashboards._report import render_report, write_report
from promptsweep.storage import artifact_name, default_artifact_dir

__all__ = [
    "DashboardProcess",
    "artifact_name",
    "attach_adapter_artifacts",
    "dashboard_command",
    "default_artifact_dir",
    "describe_method",
    "free_port",
    "job_metric",
    "job_summary",
    "launch_dashboard",
    "leaderboard_rows",
    "prepare_studies",
    "render_report",
    "run_dashboard",
    "state_counts",
    "trial_row",
    "unranked_rows",
    "write_report",
]
