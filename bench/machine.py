"""CPU time for benchmarks that share the machine: what the whole machine spent (busy, and stolen
from it), what one process spent.

On a virtual machine the hypervisor may run other guests on "our" cores: that time is
``steal`` in /proc/stat. It is neither our work nor idle, and a fan-out's tail grows with it
(a burst waits for a core that is not there), so a benchmark prints it beside its figures:
runs with much steal are not comparable with runs without.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path


def cpu_times_s() -> tuple[float, float]:
    """(busy, stolen) CPU seconds of every core since boot: busy is user, nice, system, irq and
    softirq (every process's work and the kernel's own); stolen is what the hypervisor gave
    to other guests."""
    user, nice, system, idle, iowait, irq, softirq, steal = (
        int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def process_cpu_s(pid: int) -> float:
    """CPU seconds process ``pid`` has spent (user + system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds this process has spent (user + system)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
