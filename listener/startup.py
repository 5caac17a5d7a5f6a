"""Start-up chores of ``run``: data directory permissions, start-up errors, children's lifetime.

``storage.data_dir`` holds patient data (names, IDs and birth dates in the journal, the DICOM
files): the directory is 0700 and every file the process creates 0600, whatever the umask it was
started with. Journals and directories left by older releases (0644, 0755) are tightened too.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import signal
from pathlib import Path

from listener.journal_health import JOURNAL_ERRORS

_MB = 1024 * 1024
PRIVATE_UMASK = 0o077
_PR_SET_PDEATHSIG = 1  # prctl(2): signal this process when its parent dies
JOURNAL_FILES = ("journal.sqlite3", "journal.sqlite3-wal", "journal.sqlite3-shm")

# What can stop the service from starting, as opposed to a bug (which keeps its traceback).
STARTUP_ERRORS = (OSError, *JOURNAL_ERRORS)


def restrict_permissions(data_dir: Path) -> None:
    """Make new files 0600 and directories 0700 in this process; tighten data_dir and journal."""
    os.umask(PRIVATE_UMASK)  # process-wide: this runs once, in ``run``, before any thread starts
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    modes = [(data_dir, 0o700), *((data_dir / name, 0o600) for name in JOURNAL_FILES)]
    for path, mode in modes:
        # Not ours to change (a volume's root owned by another user): the umask still holds.
        with contextlib.suppress(FileNotFoundError, PermissionError):
            path.chmod(mode)


def startup_problem(exc: BaseException, data_dir: Path) -> str:
    """One line naming why the service could not start, with the data disk's free space.

    A port that cannot be bound is not about the disk: its line says so instead.
    """
    if isinstance(exc, OSError) and exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
        return f"cannot start: {exc} (check dicom.port, metrics.port and dicomweb.port)"
    existing = next((p for p in (data_dir, *data_dir.absolute().parents) if p.exists()), None)
    try:
        free = f"{shutil.disk_usage(existing).free // _MB} MB free" if existing else "missing"
    except OSError:
        free = "free space unknown"
    return f"cannot start: {exc} (storage.data_dir {data_dir}: {free})"


def end_with_parent(parent_pid: int) -> None:
    """Get SIGTERM when the parent dies, even by SIGKILL, so no orphan child keeps a port."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # it died before the request took effect
        os._exit(0)
