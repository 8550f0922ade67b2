"""Memory: how much there is, how much a piece of work may take, and a clear refusal.

Work that could need more memory than the machine has (a huge grid, a beam that pads every
channel to thousands of pixels, a large batch) is estimated before anything is allocated and
refused with the estimate, rather than ending in a ``MemoryError`` traceback or the
out-of-memory killer.  The limit is the memory available now, or ``GALCUBECRAFT_MAX_MEMORY``
(e.g. ``"48 GB"``) when set, or the ``max_memory`` a caller passes.

On Linux, `keep_freed_memory` lets a process reuse the memory of the large temporary arrays it
frees, rather than fault it in afresh for each (the command line does this).
"""
import ctypes
import os
import re
import sys

__all__ = ["MemoryLimitError", "available_memory", "memory_limit", "check_memory",
           "format_bytes", "parse_bytes", "keep_freed_memory", "freed_memory_environ"]

#: ``mallopt``'s parameters, from glibc's ``malloc.h``.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3

_UNITS = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


class MemoryLimitError(ValueError):
    """Work refused before it starts because it would need more memory than allowed."""


def parse_bytes(text):
    """``'48 GB'``, ``'1.5GiB'``, ``'2e9'`` or a number of bytes as an int."""
    if isinstance(text, (int, float)):
        return int(text)
    m = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read {text!r} as an amount of memory (e.g. '48 GB')")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def format_bytes(n):
    """A number of bytes for people: ``'17.2 GB'``."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def available_memory():
    """Bytes of memory available to a new allocation now (``MemAvailable`` on Linux)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**63


def memory_limit(max_memory=None):
    """The most a piece of work may take: ``max_memory``, else ``GALCUBECRAFT_MAX_MEMORY``,
    else the memory available now."""
    if max_memory is not None:
        return parse_bytes(max_memory)
    env = os.environ.get("GALCUBECRAFT_MAX_MEMORY")
    return parse_bytes(env) if env else available_memory()


def check_memory(estimate, what, max_memory=None):
    """Raise `MemoryLimitError` if ``estimate`` bytes exceed the limit (see `memory_limit`)."""
    limit = memory_limit(max_memory)
    if estimate > limit:
        raise MemoryLimitError(
            f"{what} needs about {format_bytes(estimate)} of memory, more than the "
            f"{format_bytes(limit)} allowed; render fewer pixels, channels or galaxies at once, "
            "or raise the limit (max_memory=..., or GALCUBECRAFT_MAX_MEMORY='64 GB')")


def _freed_memory_settings(largest):
    """glibc's ``(M_MMAP_THRESHOLD, M_TRIM_THRESHOLD)`` that keep freed arrays up to
    ``largest`` bytes in the process."""
    largest = int(largest)
    if not 0 < largest <= 2**30:
        raise ValueError(f"largest must be between 1 byte and 1 GiB, got {largest}")
    return largest, 2 * largest - 1


def freed_memory_environ(largest=2**30):
    """`keep_freed_memory` for a process not yet started: the environment variables that
    make glibc do the same from its start (for worker processes)."""
    mmap, trim = _freed_memory_settings(largest)
    return {"MALLOC_MMAP_THRESHOLD_": str(mmap), "MALLOC_TRIM_THRESHOLD_": str(trim)}


def keep_freed_memory(largest=2**30):
    """Keep the memory of freed large arrays in this process for the next ones (Linux, glibc).

    glibc gives each allocation of 32 MB or more its own pages from the system and returns
    them when it is freed, so the next one faults its pages in afresh, zeroed by the kernel.
    A render on the CPU makes and frees many such temporaries (17 GB of them for a batch of
    64 galaxies on 64 x 64 x 32).  After this call, allocations up to ``largest`` bytes come
    from the heap and freed ones are reused.  On 2 cores (torch 2.13, one thread,
    2026-11-28) the batch of 64 random galaxies renders 1.16x faster, with a quarter of the
    page faults, and ``galcubecraft dataset`` in one process 1.06-1.08x (its batches of 16
    small cubes mostly stay under the 32 MB where glibc's own threshold stops); the peak
    memory is the same, but the process's resident memory then stays at its peak rather
    than falling back.  The ``galcubecraft`` command and the Dask workers
    `~galcubecraft.dataset.generate_dataset` starts do this for themselves; a program that
    imports the package decides for its own process.

    Returns True where it was applied; False where the C library has no ``mallopt`` (not
    glibc: macOS, Windows, musl), or where glibc refuses so high a threshold (older releases
    cap it at 32 MiB on 64-bit), and then the process keeps glibc's defaults.
    """
    mmap, trim = _freed_memory_settings(largest)
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap)) and bool(mallopt(_M_TRIM_THRESHOLD, trim))
