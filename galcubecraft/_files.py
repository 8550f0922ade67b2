"""Atomic file output: write beside the target under a temporary name, then rename."""
import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "same_file", "check_paths"]


def same_file(a, b):
    """Whether two paths name the same file: any spelling, a symbolic link, or a hard link."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_paths(inputs, outputs, overwrite=False):
    """Refuse, before any work, outputs that would destroy an input or each other.

    ``inputs`` and ``outputs`` map a name the user knows (an option such as ``--truth``) to
    a path (None: not used).  Raises `ValueError` naming both when an output is an input
    (whatever the spelling, through symbolic or hard links) or another output, and
    `FileExistsError` when an output exists and ``overwrite`` is false.
    """
    inputs = {k: v for k, v in inputs.items() if v is not None}
    outputs = {k: v for k, v in outputs.items() if v is not None}
    for out_name, out in outputs.items():
        for in_name, source in inputs.items():
            if same_file(out, source):
                raise ValueError(f"{out_name} ({out}) is the input {in_name} ({source}); it "
                                 "would be overwritten: choose another path")
    names = list(outputs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if same_file(outputs[a], outputs[b]):
                raise ValueError(f"{a} and {b} are the same file ({outputs[a]}); give them "
                                 "different paths")
    if not overwrite:
        for name, out in outputs.items():
            if Path(out).exists():
                raise FileExistsError(errno.EEXIST, f"{name} ({out}) exists", str(out))


@contextmanager
def atomic_path(filename, overwrite=False):
    """Yield a temporary path beside ``filename``; rename it over ``filename`` on success.

    On any error (or interruption) the temporary file is removed and an
    existing ``filename`` is left untouched, so a reader never sees a partial
    file.  The file gets the permissions a plain ``open`` would give it.
    """
    path = Path(filename)
    if path.exists() and not overwrite:
        raise FileExistsError(errno.EEXIST, "file exists; pass overwrite=True to replace it",
                              str(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part",
                               dir=path.parent if str(path.parent) else ".")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
