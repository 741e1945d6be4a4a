"""One run at a time in a run folder: the lock a training run holds while it writes there.

    .run.lock      while a run trains: which process owns the folder (pid, host, start, command)

Two runs into one folder would overwrite each other's checkpoints and interleave their loss.csv,
and both would report success; so ``minidiff.train`` holds ``owned_run_folder`` (rank 0, the one
process that writes) for the whole run, and a second run into the folder is refused with
``RunFolderInUse``, naming the first.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator

from minidiff.checkpoint import writable_folder

__all__ = ["LOCK_FILE", "RunFolderInUse", "owned_run_folder"]

LOCK_FILE = ".run.lock"  # the lock file of a run folder


class RunFolderInUse(RuntimeError):
    """Another process is training into the run folder."""


@contextlib.contextmanager
def owned_run_folder(folder: Any, command: str | None = None) -> Iterator[Path]:
    """Own the run folder (made if missing) for the block, or RunFolderInUse naming who owns it.

    Two runs into one folder would overwrite each other's checkpoints and interleave their
    loss.csv, and both would report success. So a run holds an exclusive ``fcntl.flock`` on
    folder/.run.lock while it trains, and the file says who holds it (pid, host, start, command)
    for the refusal. flock rather than a file made with O_CREAT|O_EXCL: the kernel drops the lock
    when its process dies, however it dies (SIGKILL, out of memory, a crash), so a lock left by a
    killed run never blocks its --resume and no guess is needed about whether a pid in a file is
    still alive, reused, or on another machine. (On a network file system the lock holds across
    machines where the mount has locks, as NFSv4 does; a mount with `nolock` locks per machine
    only. A file system that refuses locks outright is refused here, not trained into unguarded.)
    A child process forked without exec would inherit the lock; minidiff starts none.

    On leaving, normally, on an error or on Ctrl-C, the lock file is removed, and so is the
    folder if this call made it and nothing else was written in it (a run refused early).
    """
    folder = writable_folder(folder, "run folder (--out)")
    made = not folder.exists()
    lock = folder / LOCK_FILE
    fd = _take_lock(lock, command)
    try:
        yield folder
    finally:
        if _is_lock_file(fd, lock):  # unlink while still holding it: see _take_lock
            lock.unlink()
        os.close(fd)
        if made:
            with contextlib.suppress(OSError):  # not empty: the run wrote something, keep it
                folder.rmdir()


def _take_lock(lock: Path, command: str | None) -> int:
    """An open descriptor of `lock`, flock-ed by this process and naming it; RunFolderInUse if another holds it."""
    for _ in range(10):
        lock.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:  # the folder was removed under us by a run that made it: again
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise RunFolderInUse(f"{lock.parent} is in use by another training run ({holder}); wait until it "
                                 f"ends, or choose another --out") from None
        except OSError as err:
            os.close(fd)
            raise RunFolderInUse(f"cannot lock {lock} ({err.strerror}): its file system has no file locks, so "
                                 "two runs could write into it at once; choose an --out on a local disk") from None
        # The owner before us removes the file before it lets go: if it did so between our open and
        # our flock, we hold a lock on a file no longer in the folder, and must lock the new one.
        if _is_lock_file(fd, lock):
            record = {"pid": os.getpid(), "host": socket.gethostname(),
                      "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
            return fd
        os.close(fd)
    raise RunFolderInUse(f"{lock.parent}: other runs keep taking and leaving its lock; try again")


def _is_lock_file(fd: int, lock: Path) -> bool:
    """Whether `lock` still names the file open at fd."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(lock))
    except FileNotFoundError:
        return False


def _lock_holder(fd: int) -> str:
    """'pid 123 on host h since 2026-12-02 10:00:00: minidiff train ...', from the lock file of another run.

    The owner writes the file just after it takes the lock, so wait a moment for it if it is empty.
    """
    for _ in range(20):
        try:
            r = json.loads(os.pread(fd, 4096, 0))
            text = f"pid {r['pid']} on host {r['host']}, started {r['started']}"
            return text + (f": {r['command']}" if r.get("command") else "")
        except (ValueError, KeyError, TypeError):
            time.sleep(0.025)
    return "a process that has not said which"
