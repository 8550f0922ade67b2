"""Atomic file output: write beside the target under a temporary name, then rename."""
import errno
import os
import re
import socket
import tempfile

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "same_file", "check_paths", "remove_stale_parts", "read_toml"]

#: Who writes a temporary file: ``<host>-<pid>`` in its name, so that a later write can tell
#: the leftovers of a killed process from the work of a live one.
_OWNER = f"{re.sub(r'[^A-Za-z0-9]', '', socket.gethostname())[:32]}-{os.getpid()}"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_parts(folder, name=None, every_writer=False):
    """Remove the temporary files of interrupted writes in ``folder`` (of ``name`` only, if
    given): those whose writer, a process of this host, is no longer running.

    With ``every_writer``, all of them, whoever wrote them: for a caller that holds the folder
    (a dataset run under its lock, whose killed workers may have run on other hosts).
    Returns the paths removed.  Otherwise temporary files of other hosts, or of live
    processes, stay.
    """
    host = _OWNER.rsplit("-", 1)[0]
    pattern = f".{name}.*.part" if name else ".*.part"
    removed = []
    for part in Path(folder).glob(pattern):
        owner = part.name[:-len(".part")].rsplit(".", 2)[-2] if part.name.count(".") >= 3 \
            else ""
        who, _, pid = owner.rpartition("-")
        if every_writer or (who == host and pid.isdigit() and not _alive(int(pid))):
            part.unlink(missing_ok=True)
            removed.append(part)
    return removed


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
    folder = path.parent if str(path.parent) else Path(".")
    remove_stale_parts(folder, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_OWNER}.", suffix=".part", dir=folder)
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


def read_toml(path):
    """The tables of the TOML file at ``path``; `ValueError` naming the file if it is not TOML
    (a syntax error, or a binary file such as a FITS cube given by mistake)."""
    with open(path, "rb") as fh:
        try:
            return tomllib.load(fh)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not valid TOML: {exc}") from None
