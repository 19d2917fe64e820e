"""Processes on this host, through psutil: identity (pid + start time + marker), liveness, RSS, stopping.

The lowest layer beside the domain: the embedded S3 server (``storage``), the local Ray
network and the reservation journal (``ray_cluster``) decide "is this process ours and
alive?" here, one way.
"""

from hostprocs.processes import (
    Marker,
    ProcStat,
    carries,
    carrying,
    kill_members,
    marked,
    members,
    pss_bytes,
    rss_bytes,
    running,
    start_time,
    stat,
    writes_under,
)

__all__ = ["ProcStat", "Marker", "carries", "carrying", "writes_under", "stat", "start_time", "running", "members",
           "marked", "rss_bytes", "pss_bytes", "kill_members"]
