"""``python -m minigpt.env_check`` passes on this machine and FAILs (exit 1) when something is wrong."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from minigpt import env_check

LINE = re.compile(r"^(OK|FAIL|MISSING) +(\S+(?: \S+)*?) {2,}\S")  # status, name (may hold single spaces), detail


def _run(**env) -> tuple[int, dict[str, str], str]:
    proc = subprocess.run([sys.executable, "-m", "minigpt.env_check"], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)
    status = {}
    for line in proc.stdout.splitlines()[:-1]:
        m = LINE.match(line)
        assert m, line
        status[m.group(2)] = m.group(1)
    return proc.returncode, status, proc.stdout


def test_env_check_passes_here(tmp_path):
    rc, status, out = _run(MINIGPT_PROFILE="ci", MINIGPT_CACHE_DIR=str(tmp_path / "cache"))
    assert [n for n, s in status.items() if s == "FAIL"] == [], out
    assert rc == 0 and out.splitlines()[-1] == "RESULT: PASS", out
    for name in [*env_check.REQUIRED, "python", "torch build", "device", "threads", "cache dir"]:
        assert status.get(name) == "OK", (name, out)
    for name in env_check.OPTIONAL:
        assert status.get(name) in ("OK", "MISSING"), (name, out)
    assert status.get("MINIGPT_PROFILE") == "OK" and "MINIGPT_PROFILE ci" in " ".join(out.split())


def test_env_check_fails_with_exit_1(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    rc, status, out = _run(MINIGPT_PROFILE="nope", MINIGPT_CACHE_DIR=str(blocker / "cache"))
    assert rc == 1, out
    assert status["MINIGPT_PROFILE"] == "FAIL" and status["cache dir"] == "FAIL", out
    assert status["torch"] == "OK", out  # one bad setting does not drag the others down
    assert out.splitlines()[-1] == "RESULT: FAIL (cache dir, MINIGPT_PROFILE)", out


def test_missing_packages_are_reported():
    assert env_check.check_required("no-such-dist", "no_such_module_xyz").status == "FAIL"
    assert env_check.check_optional("no-such-dist", "no_such_module_xyz", "hf").status == "MISSING"
    assert env_check.check_required("numpy", "numpy").status == "OK"
