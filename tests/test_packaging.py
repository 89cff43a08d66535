"""The README installs with a plain `pip install .`, not the editable install the test
suite runs from: the built wheel must hold every module."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_the_wheel_holds_every_module_of_the_package(tmp_path: Path) -> None:
    # From a clean copy: a build/ folder left in the checkout would hide a missing package.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".venv", "build", "*.egg-info", "__pycache__", ".git", ".pytest_cache"))
    out = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("ollama_q-*.whl")
    packed = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "ollama_cli").rglob("*.py")}
    assert sources <= packed, sorted(sources - packed)
    assert "ollama_q-0.1.0.data/data/share/man/man1/ollama-q.1" in zipfile.ZipFile(wheel).namelist()
    entry = zipfile.ZipFile(wheel).read(next(n for n in zipfile.ZipFile(wheel).namelist()
                                             if n.endswith("entry_points.txt"))).decode()
    assert "ollama-q = ollama_cli.cli:run" in entry
