"""frcnn-alt as a package: the wheel carries its configs and runs from any directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_python_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("orchestrator", "stages")
        for p in (ROOT / top).rglob("__init__.py")
    }
    conf = {
        ".".join(("orchestrator", *d.relative_to(ROOT).parts))
        for d in (ROOT / "conf").rglob("*")
        if d.is_dir()
    }
    assert listed == found | {"orchestrator.conf"} | {c for c in conf if "__pycache__" not in c}


def _not_sources(directory: str, names: list[str]) -> set[str]:
    top = {".git", "build", "dist", "outputs", "multirun"} if Path(directory) == ROOT else set()
    venvs = {n for n in names if n.startswith(".venv")} if Path(directory) == ROOT else set()
    return {n for n in names if n in top | venvs or n == "__pycache__" or n.endswith(".egg-info")}


@pytest.mark.slow
def test_wheel_installs_and_runs_from_outside_the_checkout_with_a_user_config_dir(tmp_path):
    """``pip install .`` (a real wheel, no editable link) then ``frcnn-alt stage=plan`` elsewhere.

    The temporary environment sees the installed stack of this one (a path entry to its
    site-packages: the pinned TensorFlow and OD API, not our editable checkout) and gets the
    wheel itself; the user's own config dir adds a budget file without editing ours.
    """
    source = tmp_path / "source"  # a copy: building in the checkout would leave build/ behind
    shutil.copytree(ROOT, source, ignore=_not_sources)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, timeout=300)  # fmt: skip
    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    Path(site, "stack.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next((tmp_path / "dist").glob("frcnn_alt-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    str(wheel)], check=True, timeout=300)  # fmt: skip
    user_conf = tmp_path / "my_conf" / "budget"
    user_conf.mkdir(parents=True)
    (user_conf / "rpn_heavy.yaml").write_text("name: rpn_heavy\ntotal: 900\nsplit: [4, 1, 3, 1]\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [
            str(env_dir / "bin" / "frcnn-alt"),
            "stage=plan",
            "budget=rpn_heavy",
            "hydra.run.dir=run",
            "--config-dir",
            str(tmp_path / "my_conf"),
        ],  # fmt: skip
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "FRCNN_ALT_CACHE": str(tmp_path / "cache")},
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    rows = [
        line.split("|") for line in out.splitlines() if line.startswith("| s") or line.startswith("| end_")
    ]
    steps = {row[1].strip(): row[-3].strip() for row in rows if row[1].strip() != "stage"}
    assert steps == {"s1_rpn": "400", "s2_fast_rcnn": "100", "s3_rpn_shared": "300",
                     "s4_detector_head": "100", "end_to_end": "900"}  # fmt: skip
    imported = subprocess.run([str(python), "-c", "import orchestrator; print(orchestrator.__file__)"],
                              capture_output=True, text=True, check=True, cwd=elsewhere).stdout  # fmt: skip
    assert imported.startswith(str(env_dir)), imported  # the wheel, not the checkout
    assert (elsewhere / "run" / "plan" / "end_to_end.config").is_file()
