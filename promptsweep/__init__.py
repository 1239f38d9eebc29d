"""promptsweep: search prompt methods (prompt tuning, prefix tuning, P-tuning) on a frozen PLM.

The package is layered (see README.md):

- :mod:`promptsweep.methods` - prompt methods on a frozen PLM (PEFT), models, data, training loop.
- :mod:`promptsweep.search` - job spec, conditional search space, Ray Tune + Optuna orchestration.
- :mod:`promptsweep.storage` - SQL models, migrations, ranking queries (the only layer that sees SQL).
- :mod:`promptsweep.dashboards` - optuna-dashboard launch, leaderboard and HTML report.

Importing :mod:`promptsweep` is cheap: torch, transformers, peft and ray load only when a layer that
needs them is used.
"""

from promptsweep._logging import get_logger
from promptsweep.exceptions import (
    DataError,
    ExportError,
    JobNotFoundError,
    JobStateError,
    MethodConfigError,
    PromptsweepError,
    SchemaVersionError,
    SpecError,
    StorageError,
    TrainingError,
    TrialNotFoundError,
)

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "ExportError",
    "JobNotFoundError",
    "JobStateError",
    "MethodConfigError",
    "PromptsweepError",
    "SchemaVersionError",
    "SpecError",
    "StorageError",
    "TrainingError",
    "TrialNotFoundError",
    "__version__",
    "get_logger",
]
