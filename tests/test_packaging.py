"""A wheel, installed without ``-e`` into a fresh virtual environment, has every subpackage and
working commands: ``--help`` of each console command, then a tiny precompute and two
training steps run from it (not from this checkout)."""
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from conftest import skimage_data_dir

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def run(cmd, cwd, **kw):
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                       timeout=600, **kw)
    assert r.returncode == 0, f"{cmd}: exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv holding only the wheel; the heavy dependencies (torch, …) are borrowed
    from the test environment through a ``.pth`` line, so nothing is downloaded but the
    build backend."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "inpaint_online", src / "inpaint_online",
                    ignore=shutil.ignore_patterns("__pycache__"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp / "dist", src], tmp)
    (wheel,) = (tmp / "dist").glob("inpaint_online-*.whl")
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", venv], tmp)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    py = bindir / "python"
    run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], tmp)
    site = run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp)
    (Path(site.stdout.strip()) / "borrowed_deps.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["HF_HUB_OFFLINE"] = "1"
    return bindir, py, env, wheel


def test_the_wheel_holds_every_subpackage(installed):
    import zipfile
    names = zipfile.ZipFile(installed[3]).namelist()
    for sub in ["cache", "depth", "export", "stream", "train", "warp"]:
        assert f"inpaint_online/{sub}/__init__.py" in names, sub


def test_every_console_command_answers_help(installed, tmp_path):
    bindir, py, env, _ = installed
    where = run([py, "-c", "import inpaint_online; print(inpaint_online.__file__)"], tmp_path,
                env=env).stdout
    assert str(bindir.parent) in where, where            # the wheel, not this checkout
    for cmd in COMMANDS:
        out = run([bindir / cmd, "--help"], tmp_path, env=env).stdout
        assert "usage:" in out, cmd


def test_a_tiny_precompute_and_two_training_steps_run_from_the_wheel(installed, tmp_path):
    bindir, _, env, _ = installed
    data = skimage_data_dir()
    run([bindir / "inpaint-precompute", data / "astronaut.png", data / "chelsea.png",
         data / "coffee.png", "--cache-dir", tmp_path / "cache", "--max-size", "160",
         "--quiet"], tmp_path, env=env)
    r = run([bindir / "inpaint-train", "--quiet", f"data.cache_dir={tmp_path / 'cache'}",
             f"run.out_dir={tmp_path / 'runs'}", "run.name=wheel", "run.device=cpu",
             "train.steps=2", "data.crop=48", "data.batch_size=2", "data.num_workers=0",
             "data.val_count=2", "data.val_fraction=0.34", "train.val_every=2",
             "model.channels=8", "model.levels=2", "model.blocks=0", "model.dilations=[2]"],
            tmp_path, env=env)
    assert "stopped at step 2" in r.stdout
    assert (tmp_path / "runs" / "wheel" / "checkpoints" / "last.pt").is_file()
