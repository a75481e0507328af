"""The code passes the linter CI runs (ruff, configured in ruff.toml)."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_check_passes():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise",
                             "."], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "No module named ruff" not in result.stderr, "ruff is not installed: ./setup.sh installs it"
    assert result.returncode == 0, result.stdout + result.stderr
