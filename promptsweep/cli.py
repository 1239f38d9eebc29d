"""The ``promptsweep`` command line (typer + rich).

Commands import their layer inside the function body, so ``promptsweep --help`` and the commands
that only read the database load none of torch, transformers, peft or ray.
"""

from __future__ import annotations

import typer

import promptsweep

app = typer.Typer(
    name="promptsweep",
    help="Find the best prompt method (prompt tuning, prefix tuning, P-tuning) for a task on a frozen PLM.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def version() -> None:
    """Print promptsweep's version."""
    typer.echo(promptsweep.__version__)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
