"""The code passes the linter CI runs (ruff, configured in ruff.toml)."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_check_passes():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise",
                             "."], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "No module named ruff" not in result.stderr, "ruff is not installed: ./setup.sh installs it"
    assert result.returncode == 0, result.stdout + result.stderr


#: The last commit before the rule "subject <= 72 characters, figures in the body" (issue 27).
SUBJECT_RULE_SINCE = "d63d58c"


def test_commit_subjects_stay_short():
    """`git log --oneline` must stay readable: measured figures belong in the body."""
    log = subprocess.run(["git", "log", "--format=%h %s", f"{SUBJECT_RULE_SINCE}..HEAD"], cwd=REPO,
                         capture_output=True, text=True)
    if log.returncode != 0:
        pytest.skip(f"no git history here ({log.stderr.strip()[:200]})")
    long = [line for line in log.stdout.splitlines() if len(line.split(" ", 1)[1]) > 72]
    assert long == []
