"""Script text shared by the tests that SIGKILL a host and check nothing of it survives. They run
as `python -c` scripts in a process of their own: a child subreaper, so the orphans of the killed
host are re-parented to it and reaped there (PID 1 of a container need not reap), without
touching pytest's process. Compose: PRELUDE + REAP + the test's own middle."""

# Becomes a child subreaper (prctl PR_SET_CHILD_SUBREAPER = 36) and imports what scripts use.
PRELUDE = r"""
import ctypes, json, os, signal, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)
"""

# survivors(pids): reap orphans until every pid is gone or a zombie (10 s at most), then the pids
# that still exist.
REAP = r"""
def _gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _reap():
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def survivors(pids, within=10.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        _reap()
        if all(_gone(p) for p in pids):
            break
        time.sleep(0.05)
    _reap()
    return [p for p in pids if os.path.exists(f"/proc/{p}")]
"""
