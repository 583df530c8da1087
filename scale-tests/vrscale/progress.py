"""The progress bar shown while a scenario runs (rich), one line per phase."""

from __future__ import annotations

import threading
import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class Phase:
    def __init__(self, bar: RunProgress, task: TaskID) -> None:
        self._bar = bar
        self._task = task

    def update(self, completed: float, *, total: float | None = None, note: str = "") -> None:
        self._bar.update(self._task, completed=completed, total=total, note=note)

    def advance(self, n: float = 1) -> None:
        self._bar.advance(self._task, n)

    def done(self, note: str = "done") -> None:
        self._bar.finish(self._task, note)


class RunProgress:
    """Wraps rich.Progress; safe to call from worker threads (the sampler, the stack)."""

    def __init__(self, console: Console | None = None, *, enabled: bool = True) -> None:
        self.console = console or Console(stderr=True)
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[note]}"),
            console=self.console,
            disable=not enabled,
            transient=False,
        )
        self._lock = threading.Lock()
        self._stack_task: TaskID | None = None
        self.started = time.monotonic()

    def __enter__(self) -> RunProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def phase(self, description: str, total: float | None = None) -> Phase:
        with self._lock:
            task = self._progress.add_task(description, total=total, note="")
        return Phase(self, task)

    def update(
        self, task: TaskID, *, completed: float, total: float | None = None, note: str = ""
    ) -> None:
        with self._lock:
            if total is not None:
                self._progress.update(task, total=total)
            self._progress.update(task, completed=completed, note=note)

    def advance(self, task: TaskID, n: float) -> None:
        with self._lock:
            self._progress.advance(task, n)

    def finish(self, task: TaskID, note: str) -> None:
        with self._lock:
            t = self._progress.tasks[task]
            total = t.total if t.total is not None else t.completed or 1
            self._progress.update(task, total=total, completed=total, note=note)

    def stack_progress(self, stage: str, done: int, total: int) -> None:
        """The dev stack's progress(stage, done, total) callback."""
        with self._lock:
            if self._stack_task is None:
                self._stack_task = self._progress.add_task("dev stack", total=None, note="")
            self._progress.update(
                self._stack_task,
                description=f"dev stack: {stage}",
                completed=done,
                total=total or None,
            )

    def log(self, message: str) -> None:
        self.console.log(message)
