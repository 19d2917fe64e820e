"""Report a job's progress and result: Dagster Pipes when Dagster launched it, else logging.

Pipes is opened only when ``DAGSTER_PIPES_CONTEXT`` is in the environment (so a
job run by hand or by ``ray job submit`` never imports a mock or warns). Every
message also goes to the standard logger, so the Ray job log tells the same story.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, TextIO

__all__ = ["Reporter", "pipes_requested"]

PIPES_ENV = "DAGSTER_PIPES_CONTEXT"


def pipes_requested() -> bool:
    return PIPES_ENV in os.environ


def _plain(value: Any) -> Any:
    """Metadata values Pipes accepts: numbers, strings, bools, and JSON for the rest."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if hasattr(value, "item"):  # NumPy scalars
        return value.item()
    return json.loads(json.dumps(value, default=str))


_WRITE = threading.Lock()


def _message_writer() -> Any:
    """Pipes' default message writer, except that a message on stdout/stderr is written as one whole line.

    dagster_pipes writes a message and its newline in two writes; Ray forwards its tasks' log lines to the
    driver's stdout/stderr from another thread (with ``print``: two writes too), so a forwarded line could land
    between them and Dagster then drops the message (a successful step without its job's report). One write of
    newline + message + newline, flushed, keeps the message on a line of its own whatever lands around it.
    """
    from dagster_pipes import PipesDefaultMessageWriter, PipesMessageWriterChannel

    class WholeLines(PipesMessageWriterChannel):  # type: ignore[misc]
        def __init__(self, stream: TextIO) -> None:
            self._stream = stream

        def write_message(self, message: Any) -> None:
            line = "\n" + json.dumps(message) + "\n"
            with _WRITE:
                self._stream.write(line)
                self._stream.flush()

    class Writer(PipesDefaultMessageWriter):  # type: ignore[misc]
        @contextmanager
        def open(self, params: Any) -> Iterator[Any]:
            stream = params.get(self.STDIO_KEY)
            if stream in (self.STDERR, self.STDOUT) and not params.get(self.INCLUDE_STDIO_IN_MESSAGES_KEY):
                yield WholeLines(sys.stderr if stream == self.STDERR else sys.stdout)
                return
            with super().open(params) as channel:
                yield channel

    return Writer()


class Reporter:
    """Logs and one materialisation per job, sent to Pipes and to ``logging``."""

    def __init__(self, job: str, *, logger: logging.Logger | None = None) -> None:
        self.job = job
        self.logger = logger or logging.getLogger(f"jobs.{job}")
        self._pipes: Any = None
        self.reported: dict[str, Any] | None = None

    def __enter__(self) -> Reporter:
        if pipes_requested():
            from dagster_pipes import open_dagster_pipes

            self._pipes = open_dagster_pipes(message_writer=_message_writer())
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._pipes is not None:
            self._pipes.__exit__(exc_type, exc, tb)
            self._pipes = None

    @property
    def via_pipes(self) -> bool:
        return self._pipes is not None

    def info(self, message: str) -> None:
        self.logger.info(message)
        if self._pipes is not None:
            self._pipes.log.info(message)

    def warning(self, message: str) -> None:
        self.logger.warning(message)
        if self._pipes is not None:
            self._pipes.log.warning(message)

    def forward(self, level: int, message: str) -> None:
        """Send to Pipes only: for lines already written to the standard logger."""
        if self._pipes is not None:
            self._pipes.log.log(level, message)

    def materialize(self, metadata: dict[str, Any]) -> None:
        """The job's result: an asset materialisation under Pipes, a JSON log line always."""
        md = {k: _plain(v) for k, v in metadata.items()}
        self.reported = md
        self.logger.info("%s result %s", self.job, json.dumps(md, sort_keys=True, default=str))
        if self._pipes is None:
            return
        if self._pipes.is_asset_step:
            self._pipes.report_asset_materialization(metadata=md)
        else:
            self._pipes.report_custom_message({"job": self.job, "metadata": md})
