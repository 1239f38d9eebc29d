"""promptsweep.dashboards: review a job in optuna-dashboard, as tables, or as an HTML report.

- :func:`launch_dashboard` starts optuna-dashboard on promptsweep's database (127.0.0.1 by default);
  :func:`attach_adapter_artifacts` offers each trial's adapter there as an Optuna artifact.
- :func:`leaderboard_rows`, :func:`job_summary`, :func:`trial_row` flatten the storage layer's ranking
  into rows for the CLI, the API and the report.
- :func:`write_report` writes a self-contained HTML report (leaderboard, best per method, Pareto front,
  optimization history, learning curves, parameter importances).

Nothing here imports torch, transformers, peft or ray.
"""

from promptsweep.dashboards._artifacts import artifact_name, attach_adapter_artifacts, default_artifact_dir
from promptsweep.dashboards._launch import DashboardProcess, dashboard_command, free_port, launch_dashboard
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
    "render_report",
    "state_counts",
    "trial_row",
    "unranked_rows",
    "write_report",
]
