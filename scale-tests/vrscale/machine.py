"""What the run ran on: cores, memory, Python, platform."""

from __future__ import annotations

import os
import platform

import psutil

from vrscale.report import Machine


def describe_machine() -> Machine:
    load = os.getloadavg()
    return Machine(
        logical_cores=psutil.cpu_count(logical=True) or 1,
        physical_cores=psutil.cpu_count(logical=False),
        memory_gib=round(psutil.virtual_memory().total / 2**30, 2),
        python=platform.python_version(),
        platform=platform.platform(),
        load_average_at_start=(round(load[0], 2), round(load[1], 2), round(load[2], 2)),
    )
