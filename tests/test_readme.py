"""The README's examples run as written."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

from linetwin.twin.spec import bundled_spec, loads_spec

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
    test_cmd = "scripts/setup.sh dev && scripts/check.sh && .venv/bin/python -m pytest"
    assert f"    {test_cmd}\n" in README
    assert test_cmd in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    main_cmd = "scripts/setup.sh && .venv/bin/linetwin serve --mode closed"
    assert f"    {main_cmd}\n" in README


def test_readme_main_command_serves_and_polls(tmp_path):
    """The main command's `serve` (on a free port and a fresh data directory) prints an admin
    key, and the README's `poll --json` with that key gets a decision, closed mode."""
    (line,) = re.findall(r"^    scripts/setup.sh && \.venv/bin/linetwin (serve.*)$", README, re.M)
    (poll_line,) = re.findall(r"^    \.venv/bin/linetwin (poll .*)$", README, re.M)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINETWIN_")}
    env["PYTHONUNBUFFERED"] = "1"
    linetwin = str(ROOT / ".venv" / "bin" / "linetwin")
    args = [*line.split(), "--port", str(port), "--data-dir", str(tmp_path)]
    server = subprocess.Popen(
        [linetwin, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        first = server.stdout.readline()
        assert first.startswith("admin key (shown once"), first
        key = first.rsplit(" ", 1)[1].strip()
        poll_args = poll_line.replace("http://127.0.0.1:8000", f"http://127.0.0.1:{port}")
        poll_args = poll_args.replace("KEY", key).split()
        out = subprocess.run(
            [linetwin, *poll_args, "--once"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        decision = json.loads(out.stdout.splitlines()[0])
        assert decision["version"] >= 1
        assert decision["setpoints"]
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=60)
    assert "linetwin serve: stopped" in err
