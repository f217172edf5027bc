"""An exclusive lock on a run directory for the life of a run: `<run>/.dsunlearn.lock`.

Default: `fcntl.flock` on the lock file, held by rank 0 from the moment the directory is prepared until the
run ends. The kernel drops it when the process exits in any way (crash, SIGKILL, OOM kill), so a dead run never
blocks its own `--resume`. The file's content (pid, host, command, start time) only names the holder in the
refusal message; when the lock is free but names another process, that process died holding it (reported in
the acquirer's message log, nothing to clear).

File systems without working `flock` (some NFS mounts) raise ENOLCK/EOPNOTSUPP; there, or with
`DSUNLEARN_LOCK=pidfile`, the lock is the file's existence (created with O_EXCL). A lock file left by a dead
process is then detected (same host, pid gone) and reported with the command that clears it; dsunlearn does
not remove it itself, since on a shared file system "gone" cannot be proven for another host.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path

from dsunlearn.errors import RunError

LOCK_FILE = ".dsunlearn.lock"


def _pidfile_mode() -> bool:
    return os.environ.get("DSUNLEARN_LOCK", "flock") == "pidfile"


def _info(kind: str) -> bytes:
    return (json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": kind, "since": time.time()})
            + "\n").encode()  # fmt: skip


def _read_info(path: Path) -> dict:
    try:
        info = json.loads(path.read_bytes()[:4096].decode("utf-8"))
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError, UnicodeDecodeError):
        return {}


def _describe(info: dict) -> str:
    pid, host, cmd = info.get("pid", "?"), str(info.get("host", "?"))[:64], str(info.get("command", "dsunlearn"))[:32]
    since = info.get("since")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else ""
    return f"dsunlearn {cmd} (pid {pid} on {host}{when})"


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class RunLock:
    """`acquire()` (RunError naming the holder if held) and `release()`; one per process and directory."""

    def __init__(self, run_dir: Path, kind: str):
        self.path = Path(run_dir) / LOCK_FILE
        self.kind = kind
        self.fd: int | None = None
        self.pidfile = False

    def acquire(self) -> None:
        if not _pidfile_mode():
            import fcntl

            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise RunError(self._busy(_read_info(self.path))) from None
                if e.errno not in _NO_FLOCK:
                    raise
            else:
                os.ftruncate(fd, 0)
                os.write(fd, _info(self.kind))
                os.fsync(fd)
                self.fd = fd
                return
        self._acquire_pidfile()

    def _acquire_pidfile(self) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            info = _read_info(self.path)
            same_host = info.get("host") == socket.gethostname()
            if same_host and not _alive(info.get("pid")):
                raise RunError(
                    f"'{self.path.parent}' has a stale lock: {_describe(info)} is no longer running; if no other run "
                    f"uses this directory, remove the lock (rm {self.path}) and start again"
                ) from None
            raise RunError(self._busy(info) + f"; if you are sure no run uses it, remove {self.path}") from None
        os.write(fd, _info(self.kind))
        os.fsync(fd)
        self.fd, self.pidfile = fd, True

    def _busy(self, info: dict) -> str:
        return (
            f"run directory '{self.path.parent}' is in use by {_describe(info)}; wait for that run to end (or stop "
            "it), or choose another run.output_dir"
        )

    def release(self) -> None:
        if self.fd is None:
            return
        if self.pidfile:
            self.path.unlink(missing_ok=True)
        else:  # empty the file first: a reader then never names a finished run as the holder
            try:
                os.ftruncate(self.fd, 0)
            except OSError:
                pass
        os.close(self.fd)  # closing the descriptor drops the flock
        self.fd = None


def lock_problem(run_dir: Path) -> str | None:
    """Why `run_dir` cannot be locked right now (held by a live run, or a stale pidfile lock), or None.

    A probe only: it takes nothing (a shared flock, dropped at once)."""
    path = Path(run_dir) / LOCK_FILE
    if not path.exists():
        return None
    probe = RunLock(Path(run_dir), "probe")
    if _pidfile_mode():
        try:
            probe._acquire_pidfile()
        except RunError as e:
            return str(e)
        probe.release()
        return None
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return probe._busy(_read_info(path))
        return None
    finally:
        os.close(fd)
    return None
