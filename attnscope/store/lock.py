"""One writer per run file: an exclusive lock file beside it, held for the writer's lifetime.

``run.h5`` is guarded by ``run.h5.lock``, which holds the holder's pid, host
and start time as JSON and carries an OS lock (``fcntl.flock``). HDF5's own
file locking cannot do this job: a writer in SWMR mode releases it.

* A second writer (another process, or another :class:`RunFileLock` in this
  one) is refused with one line naming the holder.
* A lock left by a killed process does not block: the OS drops the ``flock``
  of a dead process, so the next writer takes the lock over and says whose it
  was. Where ``flock`` is not supported (some network file systems), a lock
  whose pid is no longer alive on this host is taken over the same way.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from pathlib import Path

from attnscope.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: fall back to the pid check alone
    fcntl = None


class RunFileLocked(UserError, RuntimeError):
    """Another live writer holds the run file's lock."""


def lock_path(path: str | os.PathLike) -> Path:
    """``run.h5`` → ``run.h5.lock``."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _describe(holder: dict) -> str:
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} (since {holder.get('since', '?')})"


class RunFileLock:
    """An exclusive lock on ``path`` (a run file) for one writer; use as a context manager or
    call :meth:`acquire` and :meth:`release`.

    ``purpose`` ("capture", "recover", ...) is recorded for the message a refused writer sees.
    """

    def __init__(self, path: str | os.PathLike, purpose: str = "write"):
        self.path = Path(path)
        self.file = lock_path(self.path)
        self.purpose = purpose
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunFileLock":
        """Take the lock or raise :class:`RunFileLocked` naming the holder; takes over stale locks."""
        if self.held:
            return self
        self.file.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(100):  # retried only when the lock file was replaced while we opened it
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                taken, previous = self._take(fd)
                if not taken:
                    raise RunFileLocked(
                        f"{self.path} is being written by {_describe(previous)}, "
                        f"{previous.get('purpose', 'writing')}; wait for it to finish, or write to another file"
                    )
                if not self._same_file(fd):
                    os.close(fd)
                    continue
            except BaseException:
                if not self.held:
                    os.close(fd)
                raise
            self._fd = fd
            if previous:
                print(f"attnscope: took over the stale lock of {self.path} left by {_describe(previous)}, "
                      "which is no longer running", file=sys.stderr)
            self._write(fd)
            return self
        raise RunFileLocked(f"{self.path}: could not take {self.file} (it keeps being replaced); try again")

    def _take(self, fd: int) -> tuple[bool, dict]:
        """Try the lock on ``fd``: ``(taken, what the lock file says about its last holder)``."""
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True, self._read(fd)
            except OSError as error:
                if error.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):  # held by another
                    for _ in range(20):  # the holder writes its name just after taking the lock
                        holder = self._read(fd)
                        if holder:
                            break
                        time.sleep(0.05)
                    return False, holder
                if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):  # else: no OS locks here
                    raise
        # no OS locks here: free when empty, or when left by a process of this host that is gone
        previous = self._read(fd)
        if not previous:
            return True, previous
        same_host = previous.get("host") == socket.gethostname()
        return same_host and not _pid_alive(int(previous.get("pid", -1))), previous

    def _same_file(self, fd: int) -> bool:
        """Whether ``fd`` is still the file at the lock path (a releasing holder unlinks it)."""
        try:
            return os.fstat(fd).st_ino == os.stat(self.file).st_ino
        except FileNotFoundError:
            return False

    @staticmethod
    def _read(fd: int) -> dict:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode(errors="replace")
        try:
            found = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError:
            return {}
        return found if isinstance(found, dict) else {}

    def _write(self, fd: int) -> None:
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose,
                  "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(holder).encode())
        os.fsync(fd)

    def release(self) -> None:
        """Remove the lock file and let go of the lock; a no-op when not held."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._same_file(fd):
                self.file.unlink()
        finally:
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> "RunFileLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
