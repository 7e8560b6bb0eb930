"""What a running container uses, read from its cgroup files: the docker backend's resource accounting.

Reading the files directly costs microseconds, where the engine's stats endpoint takes a second per sample;
it needs the engine on this machine (cgroup v1 or v2, cgroupfs or systemd driver), else the figures stay 0.
"""

from __future__ import annotations

from pathlib import Path


class CgroupUsage:
    """Peak memory, CPU time and refused forks of a running container, sampled from its cgroup (engine on
    this machine, cgroupfs or systemd driver). The cgroup disappears with the container, so a job shorter
    than one sampling interval reports no figures."""

    def __init__(self, container_id: str, v2: bool):
        root = Path("/sys/fs/cgroup")
        names = (f"docker/{container_id}", f"system.slice/docker-{container_id}.scope")
        if v2:
            self._memory = [root / n / "memory.peak" for n in names] + [root / n / "memory.current" for n in names]
            self._cpu = [root / n / "cpu.stat" for n in names]
            self._pids = [root / n / "pids.events" for n in names]
        else:
            self._memory = [root / "memory" / n / "memory.max_usage_in_bytes" for n in names]
            self._cpu = [root / "cpuacct" / n / "cpuacct.usage" for n in names]
            self._pids = [root / "pids" / n / "pids.events" for n in names]
        self.peak_mb = 0.0
        self.cpu_s = 0.0
        self.forks_refused = 0
        """How many forks the pids limit refused so far (pids.events' `max` counter)."""
        self._first_refusal: tuple[float, int] | None = None

    def forks_keep_failing(self, now: float, grace_s: float) -> bool:
        """Whether forks were refused at least `grace_s` ago and are still being refused (a fork bomb)."""
        if not self.forks_refused:
            return False
        if self._first_refusal is None:
            self._first_refusal = (now, self.forks_refused)
        since, count = self._first_refusal
        return now - since >= grace_s and self.forks_refused > count

    def sample(self) -> None:
        for path in self._memory:
            value = _read_int(path)
            if value is not None:
                self.peak_mb = max(self.peak_mb, value / 2**20)
                break
        for path in self._cpu:
            value = _read_int(path)
            if value is not None:
                # cpuacct.usage is in ns; cpu.stat's first line is usage_usec
                self.cpu_s = max(self.cpu_s, value / (1e6 if path.name == "cpu.stat" else 1e9))
                break
        for path in self._pids:
            value = _read_int(path)
            if value is not None:
                self.forks_refused = max(self.forks_refused, value)
                break


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    words = text.split()
    if path.name == "cpu.stat":
        return int(words[1]) if len(words) > 1 and words[0] == "usage_usec" else None
    if path.name == "pids.events":
        return int(words[1]) if len(words) > 1 and words[0] == "max" else None
    return int(words[0]) if words and words[0].isdigit() else None
