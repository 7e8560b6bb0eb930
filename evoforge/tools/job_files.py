"""Reading what a sandboxed job left in its work dir, as root, without being tricked by it.

After a job, its uid has had write access to the work dir: any file there may be a symlink to a host file,
a FIFO that blocks a reader forever, or far too large: `read_job_file` refuses all three.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

RESULTS_DIR = "results"
"""The evaluator's output folder inside a stage's work dir."""
MAX_METRICS_BYTES = 10_000_000


def read_job_file(path: Path, limit: int = MAX_METRICS_BYTES) -> bytes:
    """Read a file a sandboxed job wrote, refusing symlinks (also in its directory), FIFOs and huge files."""
    if path.parent.is_symlink():
        raise OSError(f"{path.parent.name}/ is a symlink")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path.name} is not a regular file")
        if info.st_size > limit:
            raise OSError(f"{path.name} is {info.st_size} bytes, over the {limit}-byte limit")
        return f.read(limit)
