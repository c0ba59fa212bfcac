"""`make test` without Chromium: the browser tests skip, and the summary says how many and how to enable them."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import ENABLE_BROWSER_TESTS, ROOT


def test_summary_counts_the_skipped_browser_tests_and_says_how_to_enable_them(tmp_path):
    missing = tmp_path / "no-chromium"
    env = dict(os.environ, PYTHONPATH=str(ROOT), DATAMODELS_CHROMIUM=str(missing))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/pages/test_browser.py"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the oracle: pytest's own count on its final line ("10 skipped in 1.2s"), which includes every test of the file
    skipped = int(re.search(r"(\d+) skipped", proc.stdout.splitlines()[-1]).group(1))
    assert skipped > 0 and not re.search(r"\d+ (passed|failed|error)", proc.stdout.splitlines()[-1])
    assert "browser tests skipped" in proc.stdout
    assert f"{skipped} browser tests skipped: no Chromium at {missing}. To run them: {ENABLE_BROWSER_TESTS}." in proc.stdout
