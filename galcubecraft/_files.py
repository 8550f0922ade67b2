"""Atomic file output: write beside the target under a temporary name, then rename."""
import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path"]


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
