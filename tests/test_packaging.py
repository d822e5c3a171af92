"""The built wheel installs one namespace, `linetwin`, with its data files."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_holds_only_the_linetwin_namespace(tmp_path):
    # Build from a copy of the files git would commit (as a fresh clone has them), so that
    # nothing in the checkout's build/ or caches can reach the wheel.
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        check=True, capture_output=True, cwd=ROOT,
    ).stdout.decode().split("\0")  # fmt: skip
    source = tmp_path / "src"
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(source)],
        check=True, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("linetwin-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"linetwin"}
    for package in ("cli", "twin", "models", "optimizer", "replay", "api"):
        assert f"linetwin/{package}/__init__.py" in names
    assert "linetwin/twin/lines/example.toml" in names
    assert "linetwin/models/pretrained/example/model.safetensors" in names
    assert "linetwin/api/web/index.html" in names
    assert not any(n.startswith("linetwin/tests") or "/bench/" in n for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "linetwin = linetwin.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
