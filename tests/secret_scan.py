"""Scan files for secrets from a child process, never from the test process.

The test process holds SQLite connections to ``<state>/admission.db``. SQLite's locks are POSIX
advisory locks, which belong to the process and are all dropped when *any* descriptor of the file
is closed: a plain ``read_bytes()`` of the database here silently unlocked it, another process
then checkpointed and reset the WAL under this one's feet, and every later test on that state dir
failed with 'database disk image is malformed' (CI, after ``test_pipelines``' scan of the state dir).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

_SCAN = r"""
import json, sys
job = json.load(sys.stdin)
needles = {k: bytes.fromhex(v) for k, v in job["needles"].items()}
found = []
for p in job["paths"]:
    try:
        with open(p, "rb") as f:
            data = f.read()
    except OSError:  # a socket, a file gone meanwhile
        continue
    found += [f"{what} in {p}" for what, n in needles.items() if n in data]
json.dump(found, sys.stdout)
"""


def leaks(paths: Iterable[Path], needles: dict[str, bytes]) -> list[str]:
    """'<what> in <path>' for every needle found in a file of ``paths``, read by a child process."""
    job = {"paths": [str(p) for p in paths], "needles": {k: v.hex() for k, v in needles.items()}}
    out = subprocess.run([sys.executable, "-c", _SCAN], input=json.dumps(job), capture_output=True, text=True,
                         timeout=600, check=True)
    return list(json.loads(out.stdout))
