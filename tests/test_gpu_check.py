"""benchmarks/gpu_check.sh, the one GPU check for when a device machine is lent, runs its
steps on a CPU too (``--device cpu``) and writes one report with every step's exit status."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_gpu_check_runs_every_step_on_the_cpu_and_writes_one_report(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path / "out"), PYTHON=sys.executable, HF_HUB_OFFLINE="1")
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=880)
    assert r.returncode == 0, r.stderr[-2000:]
    report = (tmp_path / "out" / "gpu_check_report.txt").read_text()
    steps = re.findall(r"^-- (.+): exit (\d+), \d+ s$", report, re.M)
    names = [n for n, _ in steps]
    for want in ("pytest -m cuda", "warp benchmark", "depth cache for the loop",
                 "training loop", "loader", "depth precompute"):
        assert any(n.startswith(want) for n in names), (want, names)
    for name, rc in steps:
        # without CUDA every CUDA test is deselected: pytest's "no tests ran" (5)
        assert rc == "0" or (name.startswith("pytest -m cuda") and rc == "5"), (name, report[-3000:])
    assert "samples/s per worker" in report and "device=cpu" in report
