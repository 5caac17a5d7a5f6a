"""A FUSE filesystem that keeps writes in memory until they are synced, for power-cut tests.

Like LazyFS: file data becomes durable at ``fsync``/``fdatasync`` of that file, a name (create,
mkdir, rename, unlink) at ``fsync`` of its directory. A power cut throws away everything else.
Run as ``python -m tests.crashfs BACKING MOUNT``: it serves, in memory, the tree found in BACKING
(all of it durable); when unmounted it writes only the durable state back to BACKING, so the
next mount is the disk as it would be after the cut.

Commands on stdin, one per line, each answered with one line on stdout (the first line it prints
is ``ready``, once the kernel mounted it):

- ``cut PID``: power off now: SIGKILL the process ``PID``, then fail every further write.
- ``arm N PID``: power off just before the ``N``-th sync from now (that sync is not applied).
- ``syncs``: how many syncs were applied since mounting.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mfusepy  # type: ignore[import-untyped]  # ctypes bindings without type hints

_DIR_MODE, _FILE_MODE = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644


@dataclass
class _Node:
    """A file (``data``) or a directory (``entries``: name -> node number)."""

    is_dir: bool
    data: bytearray = field(default_factory=bytearray)
    entries: dict[str, int] = field(default_factory=dict)
    mtime_ns: int = field(default_factory=time.time_ns)


class _PowerCut:
    """When the power goes: a sync countdown and the process to kill with it."""

    def __init__(self) -> None:
        self.countdown: int | None = None
        self.victim: int | None = None
        self.off = False

    def arm(self, syncs: int, pid: int) -> None:
        self.countdown, self.victim = syncs, pid

    def now(self, pid: int) -> None:
        """Kill ``pid`` first: nothing it does after this moment may reach the disk."""
        self.off, self.countdown = True, None
        os.kill(pid, signal.SIGKILL)

    def before_sync(self) -> bool:
        """True when this sync is where the power goes (it is then not applied)."""
        if self.countdown is not None and self.victim is not None:
            self.countdown -= 1
            if self.countdown <= 0:
                self.now(self.victim)
        return self.off


class CrashFs(mfusepy.Operations):  # type: ignore[misc]  # untyped base class
    """The volatile tree (what processes see) and the durable state (what a power cut leaves)."""

    use_ns = True

    def __init__(self, backing: Path) -> None:
        self._lock = threading.Lock()
        self._nodes: dict[int, _Node] = {}
        self._handles: dict[int, int] = {}
        self._durable_data: dict[int, bytes] = {}
        self._durable_entries: dict[int, dict[str, int]] = {}
        self.power = _PowerCut()
        self.syncs = 0
        self._load(backing, self._new(is_dir=True))

    # -- state -----------------------------------------------------------------------------

    def _new(self, *, is_dir: bool) -> int:
        number = len(self._nodes) + 1
        self._nodes[number] = _Node(is_dir=is_dir)
        return number

    def _load(self, directory: Path, number: int) -> None:
        """Everything already in BACKING is on disk, hence durable."""
        for child in sorted(directory.iterdir()):
            child_number = self._new(is_dir=child.is_dir())
            self._nodes[number].entries[child.name] = child_number
            if child.is_dir():
                self._load(child, child_number)
            else:
                self._nodes[child_number].data = bytearray(child.read_bytes())
                self._durable_data[child_number] = child.read_bytes()
        self._durable_entries[number] = dict(self._nodes[number].entries)

    def dump(self, target: Path, number: int = 1) -> None:
        """Write the durable tree (what survives a power cut) under ``target``."""
        target.mkdir()
        for name, child in self._durable_entries.get(number, {}).items():
            if self._nodes[child].is_dir:
                self.dump(target / name, child)
            else:
                (target / name).write_bytes(self._durable_data.get(child, b""))

    def _lookup(self, path: str) -> int:
        number = 1
        for part in filter(None, path.split("/")):
            node = self._nodes[number]
            if not node.is_dir or part not in node.entries:
                raise mfusepy.FuseOSError(errno.ENOENT)
            number = node.entries[part]
        return number

    def _parent(self, path: str) -> tuple[_Node, str]:
        head, _, name = path.rstrip("/").rpartition("/")
        return self._nodes[self._lookup(head)], name

    def _writable(self) -> None:
        if self.power.off:
            raise mfusepy.FuseOSError(errno.EIO)

    def _file(self, path: str | None, fh: int | None) -> _Node:
        if fh is not None and fh in self._handles:
            return self._nodes[self._handles[fh]]
        assert path is not None
        return self._nodes[self._lookup(path)]

    def _open_handle(self, number: int) -> int:
        handle = max(self._handles, default=0) + 1
        self._handles[handle] = number
        return handle

    # -- metadata --------------------------------------------------------------------------

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        with self._lock:
            node = self._file(path, fh)
            return {
                "st_mode": _DIR_MODE if node.is_dir else _FILE_MODE,
                "st_nlink": 2 if node.is_dir else 1,
                "st_size": len(node.data),
                "st_mtime": node.mtime_ns,
                "st_ctime": node.mtime_ns,
                "st_atime": node.mtime_ns,
            }

    def readdir(self, path: str, fh: int) -> list[str]:
        with self._lock:
            return [".", "..", *self._nodes[self._lookup(path)].entries]

    def statfs(self, path: str) -> dict[str, int]:
        return {
            "f_bsize": 4096,
            "f_frsize": 4096,
            "f_blocks": 1 << 22,
            "f_bfree": 1 << 21,
            "f_bavail": 1 << 21,
            "f_files": 1 << 20,
            "f_ffree": 1 << 19,
            "f_namemax": 255,
        }

    def chmod(self, path: str, mode: int) -> int:
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        return 0

    # -- names -----------------------------------------------------------------------------

    def mkdir(self, path: str, mode: int) -> int:
        with self._lock:
            self._writable()
            parent, name = self._parent(path)
            if name in parent.entries:
                raise mfusepy.FuseOSError(errno.EEXIST)
            parent.entries[name] = self._new(is_dir=True)
            return 0

    def create(self, path: str, mode: int, flags: int = 0) -> int:
        with self._lock:
            self._writable()
            parent, name = self._parent(path)
            if name not in parent.entries:
                parent.entries[name] = self._new(is_dir=False)
            return self._open_handle(parent.entries[name])

    def unlink(self, path: str) -> int:
        with self._lock:
            self._writable()
            parent, name = self._parent(path)
            if parent.entries.pop(name, None) is None:
                raise mfusepy.FuseOSError(errno.ENOENT)
            return 0

    def rmdir(self, path: str) -> int:
        with self._lock:
            self._writable()
            parent, name = self._parent(path)
            if self._nodes[self._lookup(path)].entries:
                raise mfusepy.FuseOSError(errno.ENOTEMPTY)
            del parent.entries[name]
            return 0

    def rename(self, old: str, new: str) -> int:
        with self._lock:
            self._writable()
            source, old_name = self._parent(old)
            target, new_name = self._parent(new)
            number = source.entries.pop(old_name)
            target.entries[new_name] = number
            return 0

    # -- data ------------------------------------------------------------------------------

    def open(self, path: str, flags: int) -> int:
        with self._lock:
            if flags & os.O_TRUNC:
                self._writable()
                self._nodes[self._lookup(path)].data.clear()
            return self._open_handle(self._lookup(path))

    def release(self, path: str | None, fh: int) -> int:
        with self._lock:
            self._handles.pop(fh, None)
            return 0

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        with self._lock:
            return bytes(self._file(path, fh).data[offset : offset + size])

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        with self._lock:
            self._writable()
            node = self._file(path, fh)
            if len(node.data) < offset:
                node.data.extend(bytes(offset - len(node.data)))
            node.data[offset : offset + len(data)] = data
            node.mtime_ns = time.time_ns()
            return len(data)

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        with self._lock:
            self._writable()
            node = self._file(path, fh)
            del node.data[length:]
            node.data.extend(bytes(length - len(node.data)))
            return 0

    # -- durability ------------------------------------------------------------------------

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        with self._lock:
            if self.power.before_sync():
                raise mfusepy.FuseOSError(errno.EIO)
            number = self._handles.get(fh) or self._lookup(path or "/")
            self._durable_data[number] = bytes(self._nodes[number].data)
            self.syncs += 1
            print(f"sync {self.syncs} file {path}", file=sys.stderr, flush=True)
            return 0

    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        with self._lock:
            if self.power.before_sync():
                raise mfusepy.FuseOSError(errno.EIO)
            number = self._lookup(path or "/")
            self._durable_entries[number] = dict(self._nodes[number].entries)
            self.syncs += 1
            print(f"sync {self.syncs} dir {path}", file=sys.stderr, flush=True)
            return 0

    def init(self, path: str) -> None:
        print("ready", flush=True)

    def command(self, line: str) -> str:
        """Carry out one control command; return the answer line."""
        words = line.split()
        with self._lock:
            if words[0] == "cut":
                self.power.now(int(words[1]))
            elif words[0] == "arm":
                self.power.arm(int(words[1]), int(words[2]))
            elif words[0] == "syncs":
                return str(self.syncs)
            else:
                return f"unknown command {line!r}"
        return "ok"


def _serve_commands(filesystem: CrashFs) -> None:
    for line in sys.stdin:
        if line.strip():
            print(filesystem.command(line), flush=True)


def main(backing: Path, mount: Path) -> None:
    """Serve BACKING at MOUNT until unmounted, then replace BACKING with the durable state."""
    filesystem = CrashFs(backing)
    threading.Thread(target=_serve_commands, args=(filesystem,), daemon=True).start()
    mfusepy.FUSE(filesystem, str(mount), foreground=True, nothreads=True, fsname="crashfs")
    survivor = backing.with_name(backing.name + ".new")
    shutil.rmtree(survivor, ignore_errors=True)
    filesystem.dump(survivor)
    shutil.rmtree(backing)
    survivor.rename(backing)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
