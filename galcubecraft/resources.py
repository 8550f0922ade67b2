"""Memory: how much there is, how much a piece of work may take, and a clear refusal.

Work that could need more memory than the machine has (a huge grid, a beam that pads every
channel to thousands of pixels, a large batch) is estimated before anything is allocated and
refused with the estimate, rather than ending in a ``MemoryError`` traceback or the
out-of-memory killer.  The limit is the memory available now, or ``GALCUBECRAFT_MAX_MEMORY``
(e.g. ``"48 GB"``) when set, or the ``max_memory`` a caller passes.
"""
import os
import re

__all__ = ["MemoryLimitError", "available_memory", "memory_limit", "check_memory",
           "format_bytes", "parse_bytes"]

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
