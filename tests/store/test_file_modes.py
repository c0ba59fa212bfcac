"""No file the project writes is created 0600: under a 022 umask each gets 0644, the mode open() gives, so
teammates on a shared file system can read datasets and runs (mkstemp's 0600 would survive the rename)."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

from tests.conftest import FAST_TRAIN, ROOT


def test_a_dataset_file_and_a_run_written_under_umask_022_are_0644(tmp_path):
    planted, out = tmp_path / "planted.npz", tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for argv in (["plant-leaks", "--dataset", "digits", "--n", "4", "--out", planted],
                 ["train", "--dataset", f"npz:{planted}", "--models", "2", "--out", out, *FAST_TRAIN]):
        subprocess.run([sys.executable, "-m", "precompute", *map(str, argv)], cwd=ROOT, env=env, check=True,
                       capture_output=True, preexec_fn=lambda: os.umask(0o022))
    modes = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in tmp_path.rglob("*") if p.is_file()}
    assert "planted.npz" in modes and "run/masks.npy" in modes and "run/manifest.json" in modes
    assert set(modes.values()) == {oct(0o644)}, modes


def test_a_folder_built_under_a_temporary_name_gets_the_mode_mkdir_gives(tmp_path):
    """An import builds its run in a mkdtemp folder (0700) renamed into place: it is given mkdir's mode."""
    from backend.importers.release import _stage_dir

    stage = _stage_dir(tmp_path / "run")
    (tmp_path / "plain").mkdir()
    assert stat.S_IMODE(stage.stat().st_mode) == stat.S_IMODE((tmp_path / "plain").stat().st_mode)
