"""Progress bars for runtimes that take a while (ONNX Runtime timing, Lava simulations), on stderr and only when it
is a terminal; silent otherwise (tests, pipes, CI logs)."""
from __future__ import annotations

import sys
from contextlib import contextmanager


@contextmanager
def progress_bar():
    """Yields ``add(description, total)``, which returns a ``step(n=1)`` callback that advances its task."""
    if not sys.stderr.isatty():
        yield lambda description, total: (lambda n=1: None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        def add(description: str, total: int):
            task = bar.add_task(description, total=total)
            return lambda n=1: bar.advance(task, n)

        yield add
