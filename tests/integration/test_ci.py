"""The CI script itself (.ci/run, scripts/cross-test.sh): its package step
run against stand-in apt/dpkg tools, so nothing is installed for real."""
import os
import subprocess

from conftest import REPO

# apt-get as it behaves while another apt or dpkg holds the lock (issue 23,
# part 6): without a lock timeout it fails at once with apt's message and
# status; with one it waits, gets the lock and succeeds.
FAKE_APT_GET = """#!/bin/sh
echo "apt-get $*" >>"$FAKE_LOG"
case " $* " in
*" DPkg::Lock::Timeout="*) exit 0 ;;
esac
echo "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (apt-get)" >&2
exit 100
"""
FAKES = {
    "apt-get": FAKE_APT_GET,
    # every package missing, no foreign architecture yet
    "dpkg-query": "#!/bin/sh\nexit 1\n",
    "dpkg": "#!/bin/sh\necho \"dpkg $*\" >>\"$FAKE_LOG\"\nexit 0\n",
    "apt-cache": "#!/bin/sh\nexit 0\n",
    "sudo": "#!/bin/sh\nexec \"$@\"\n",
    # the build after the package step: stop there (set -e), recorded
    "make": "#!/bin/sh\necho \"make $*\" >>\"$FAKE_LOG\"\nexit 3\n",
}


def test_ci_waits_for_the_dpkg_lock(tmp_path):
    """.ci/run (and scripts/cross-test.sh it calls) pass a lock timeout to
    every apt-get: with another apt holding the lock the package step gets
    through and the run reaches the build."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, text in FAKES.items():
        p = bindir / name
        p.write_text(text)
        p.chmod(0o755)
    log = tmp_path / "log"
    env = dict(os.environ, PATH=f"{bindir}:/usr/bin:/bin", FAKE_LOG=str(log))
    r = subprocess.run(["sh", os.path.join(REPO, ".ci", "run")], env=env,
                       capture_output=True, text=True, timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    apt = [c for c in calls if c.startswith("apt-get ")]
    assert "Could not get lock" not in r.stderr, (r.stdout, r.stderr)
    # .ci/run's update and install, cross-test.sh's update and install(s)
    assert sum(" update" in c for c in apt) >= 2, apt
    assert sum(" install" in c for c in apt) >= 2, apt
    assert all("DPkg::Lock::Timeout=" in c for c in apt), apt
    # the package step got through: the run went on to the build (the stand-in
    # make fails it there)
    assert any(c.startswith("make ") for c in calls), (calls, r.stdout, r.stderr)
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
