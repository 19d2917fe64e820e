"""The job's Pipes messages stay whole lines when another thread writes to the same stream."""

import io
import json
import threading
import time

import pytest

from jobs import progress


class _Stream(io.StringIO):
    """A stream whose writes give the GIL away, as writes to a real pipe do (dagster_pipes' own channel keeps
    20 of 300 messages whole on it)."""

    def write(self, s: str) -> int:
        time.sleep(0.0002)
        return super().write(s)


def test_each_pipes_message_is_one_whole_line_among_other_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = _Stream()
    monkeypatch.setattr(progress.sys, "stderr", stream)
    writer = progress._message_writer()
    stop = threading.Event()

    def noise() -> None:  # what Ray's log forwarding does: print, i.e. text and newline in two writes
        while not stop.is_set():
            stream.write("(_remote_body pid=1) a forwarded log line")
            stream.write("\n")

    t = threading.Thread(target=noise)
    t.start()
    try:
        with writer.open({"stdio": "stderr"}) as channel:
            for i in range(300):
                channel.write_message({"__dagster_pipes_version": "0.1", "method": "log", "params": {"i": i}})
    finally:
        stop.set()
        t.join()
    got = [json.loads(line)["params"]["i"] for line in stream.getvalue().splitlines() if line.startswith("{")]
    assert got == list(range(300))


def test_other_channels_are_pipes_own(tmp_path: object) -> None:
    writer = progress._message_writer()
    path = f"{tmp_path}/messages"
    with writer.open({"path": path}) as channel:
        channel.write_message({"method": "log"})
    assert json.loads(open(path).read().splitlines()[0]) == {"method": "log"}
