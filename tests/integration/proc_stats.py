"""What a process holds, read from /proc: open fds, resident memory, CPU time.
Used by the hostile-peer and fault tests to check that resources come back."""
import os
import resource
import time

from conftest import wait_until

CLK_TCK = os.sysconf("SC_CLK_TCK")


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid):
    """User + system CPU time of the process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # after the command name: state is field 3, utime 14, stime 15 (1-based)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wait_fds_at_most(pid, limit, timeout=20.0, what="fds"):
    """Wait until the process holds at most `limit` fds; returns the count."""
    last = [None]

    def ok():
        last[0] = fd_count(pid)
        return last[0] <= limit
    try:
        wait_until(ok, timeout, interval=0.1, what=what)
    except AssertionError:
        raise AssertionError(f"pid {pid} still holds {last[0]} fds after {timeout}s "
                             f"(expected at most {limit}): {what}")
    return last[0]


def raise_nofile(n):
    """Lets this test process open n sockets (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(n, hard) if hard != resource.RLIM_INFINITY else n
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def is_asan(path):
    """Whether a binary was built with AddressSanitizer (slower, more memory)."""
    try:
        with open(path, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


def built_by_clang(path):
    """Whether the binary's .comment names clang (valgrind 3.19 cannot read
    the DWARF 5 that clang 14 writes by default)."""
    try:
        with open(path, "rb") as f:
            return b"clang version" in f.read()
    except OSError:
        return False


class Stopwatch:
    def __init__(self):
        self.t0 = time.monotonic()

    def __call__(self):
        return time.monotonic() - self.t0
