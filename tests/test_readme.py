"""The README's examples run as written."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from twin.spec import bundled_spec, loads_spec

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_python_examples_run(capsys):
    code = blocks("python")
    assert code
    for block in code:
        exec(compile(block, "README.md", "exec"), {})
    printed = capsys.readouterr().out.split()
    assert float(printed[0]) > 0  # throughput per hour


def test_toml_example_is_the_bundled_minimal_line():
    (toml,) = blocks("toml")
    assert loads_spec(toml, "README.md") == bundled_spec("two-station")


def test_ci_runs_the_readme_test_command():
    test_cmd = "scripts/setup.sh dev && .venv/bin/python -m pytest"
    assert f"    {test_cmd}\n" in README
    assert test_cmd in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    main_cmd = "scripts/setup.sh && .venv/bin/linetwin simulate --scenarios 32"
    assert f"    {main_cmd}\n" in README
    out = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "linetwin"),
            "simulate",
            "--scenarios",
            "4",
            "--hours",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert '"throughput_per_hour"' in out.stdout
