"""Load the setpoint endpoint on loopback against a bare uvicorn app measured in the same run.

    python bench/api.py [--quick] [--seconds S]

Each server runs in its own process on 127.0.0.1 (a free port) with the uvicorn settings of
`linetwin serve` (`log_level="info"`, no access log, `lifespan="off"`, uvicorn's own choice of
loop and HTTP parser: uvloop and httptools, which the package depends on);
the load comes from a separate process: `wrk` (one thread, 32 keep-alive connections) when it is
installed, else an asyncio httpx generator. Phases, each `--seconds` long after a short warm-up:

- `bare_asgi`: the reference, a raw ASGI app answering a small JSON;
- `bare_fastapi`: a one-route FastAPI app answering the same JSON (context, not a target);
- `service_304_running`: `GET /v1/setpoints` with `If-None-Match` = the current ETag (each poller
  follows the ETag of its last answer, like a real poller) while the controller cycles;
- `service_200_running`: the same without `If-None-Match` (every answer carries the body);
- `service_304_paused`: the 304 path with the controller paused (a Runtime built with a period
  of 1e9 line s on the same database: it restores the last published decision and never cycles;
  the real-time twin still runs).

The service is the bundled example line with its shipped checkpoint, default settings except the
per-key rate limit (off) and a fresh data directory. Prints one JSON line: requests/s and
p50/p99 per phase, the CPU each side used (to say whether the generator or the server was the
limit) and the ratios against the targets. On a 2-core machine the generator competes with the
server (and the service's twin and controller threads) for the cores: absolute figures are low.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HOST = "127.0.0.1"
CONNECTIONS = 32
SMALL_JSON = b'{"ok":true,"version":1}'
PATH = "/v1/setpoints"
PACED_MS = 50
"""Each poller's pause between requests in the paced phase (32 x 20 Hz = 640 requests/s)."""

WRK_LUA = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
local pace = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if pace then function delay() return pace end end
function init(args)
  etag = os.getenv("BENCH_ETAG"); if etag == "" then etag = nil end
  auth = os.getenv("BENCH_AUTH"); if auth == "" then auth = nil end
  n200 = 0; n304 = 0; nother = 0; changes = 0
end
function request()
  local h = {}
  if auth then h["Authorization"] = "Bearer " .. auth end
  if etag then h["If-None-Match"] = etag end
  return wrk.format("GET", nil, h)
end
function response(status, headers, body)
  if status == 200 then n200 = n200 + 1 elseif status == 304 then n304 = n304 + 1
  else nother = nother + 1 end
  if etag then
    local t = headers["etag"] or headers["ETag"]
    if t and t ~= etag then etag = t; changes = changes + 1 end
  end
end
function done(summary, latency, requests)
  local c = {n200 = 0, n304 = 0, nother = 0, changes = 0}
  for _, t in ipairs(threads) do
    for k, _ in pairs(c) do c[k] = c[k] + t:get(k) end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_s":%.6f,"p50_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,' ..
    '"errors":%d,"n200":%d,"n304":%d,"other_status":%d,"etag_changes":%d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(99) / 1e3, latency.max / 1e3,
    e.connect + e.read + e.write + e.timeout, c.n200, c.n304, c.nother, c.changes))
end
"""


# -- servers (child processes) ---------------------------------------------------------------
async def bare_asgi(scope: dict, receive: object, send: object) -> None:
    """The reference: a raw ASGI app answering a small JSON to every request."""
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"application/json"), (b"content-length", b"23")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": SMALL_JSON})  # type: ignore[operator]


def bare_fastapi() -> object:
    from fastapi import FastAPI, Response

    app = FastAPI()

    @app.get(PATH)
    async def small() -> Response:
        return Response(SMALL_JSON, media_type="application/json")

    return app


def serve(kind: str, port: int, data_dir: str, period_s: float, ready: str) -> None:
    """Run one server until SIGTERM; write `{"key", "etag"}` to `ready` once it answers."""
    import uvicorn

    runtime = None
    info: dict = {"key": "", "etag": ""}
    if kind == "asgi":
        app: object = bare_asgi
    elif kind == "fastapi":
        app = bare_fastapi()
    else:
        from linetwin.api.app import create_app
        from linetwin.api.runtime import Runtime
        from linetwin.api.settings import Settings
        from linetwin.models.checkpoint import load
        from linetwin.models.pretrained import bundled_checkpoint
        from linetwin.twin import bundled_spec

        spec = bundled_spec("example")
        folder = bundled_checkpoint(spec)
        if folder is None:
            raise SystemExit("bench/api.py: no shipped checkpoint for the example line")
        settings = Settings.load(
            {}, data_dir=data_dir, model_dir=folder, rate_per_s=0, period_s=period_s
        )
        runtime = Runtime(settings, spec, load(folder, spec))
        info["key"] = runtime.keys.create("controller", "bench/api.py", actor="bench").key
        app = create_app(runtime)
        runtime.start()
    config = uvicorn.Config(
        app, host=HOST, port=port, log_level="info", access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)

    def announce() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            current = None if runtime is None else runtime.current
            if server.started and (runtime is None or current is not None):
                info["etag"] = "" if current is None else current.etag
                Path(ready + ".tmp").write_text(json.dumps(info))
                os.replace(ready + ".tmp", ready)
                return
            time.sleep(0.05)

    threading.Thread(target=announce, daemon=True).start()
    try:
        server.run()
    finally:
        if runtime is not None:
            runtime.stop()


# -- fallback load generator (child process) -------------------------------------------------
async def _generate(url: str, seconds: float, etag: str, auth: str, pause_ms: str) -> dict:
    import httpx

    lat: list[float] = []
    counts = {"n200": 0, "n304": 0, "other_status": 0, "errors": 0, "etag_changes": 0}
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:

        async def poller() -> None:
            tag = etag
            headers = {"Authorization": f"Bearer {auth}"} if auth else {}
            while time.perf_counter() < stop:
                if tag:
                    headers["If-None-Match"] = tag
                t0 = time.perf_counter()
                try:
                    r = await client.get(url, headers=headers)
                except httpx.HTTPError:
                    counts["errors"] += 1
                    continue
                lat.append(time.perf_counter() - t0)
                key = {200: "n200", 304: "n304"}.get(r.status_code, "other_status")
                counts[key] += 1
                new = r.headers.get("etag")
                if tag and new and new != tag:
                    tag, counts["etag_changes"] = new, counts["etag_changes"] + 1
                if pause_ms:
                    await asyncio.sleep(float(pause_ms) / 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(poller() for _ in range(CONNECTIONS)))
        duration = time.perf_counter() - t0
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3 if lat else float("nan")  # noqa: E731
    return {
        "requests": len(lat),
        "duration_s": duration,
        "p50_ms": q(0.50),
        "p99_ms": q(0.99),
        "max_ms": lat[-1] * 1e3 if lat else float("nan"),
        **counts,
    }


# -- the driver ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Server:
    def __init__(self, kind: str, data_dir: Path, period_s: float, log: Path) -> None:
        self.port = free_port()
        ready = data_dir / f"ready-{kind}-{self.port}.json"
        cmd = [sys.executable, __file__, "--serve", kind, "--port", str(self.port)]
        cmd += ["--data-dir", str(data_dir), "--period-s", repr(period_s), "--ready", str(ready)]
        self.log = log.open("ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 180
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"bench/api.py: the {kind} server did not start; see {log}")
            time.sleep(0.05)
        self.info = json.loads(ready.read_text())
        self.url = f"http://{HOST}:{self.port}{PATH}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def load(
    server: Server, seconds: float, etag: bool, wrk: str | None, script: Path, paced: bool
) -> dict:
    """Drive `server` with 32 pollers for `seconds` (back to back, or each pausing `PACED_MS`
    between requests); figures plus the CPU each side used."""
    env = dict(os.environ)
    env["BENCH_DELAY_MS"] = str(PACED_MS) if paced else ""
    env["BENCH_AUTH"] = server.info["key"]
    env["BENCH_ETAG"] = server.info["etag"] if etag else ""
    secs = max(1, round(seconds))
    if wrk is not None:
        cmd = [wrk, "-t1", f"-c{CONNECTIONS}", f"-d{secs}s", "--timeout", "10s", "-s", str(script)]
        cmd.append(server.url)
    else:
        cmd = [sys.executable, __file__, "--generate", server.url, "--seconds", str(secs)]
    s0, g0, t0 = proc_cpu_s(server.proc.pid), children_cpu_s(), time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=secs + 60)
    wall = time.perf_counter() - t0
    s1, g1 = proc_cpu_s(server.proc.pid), children_cpu_s()
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCHJSON ")), None)
    if line is None:
        raise SystemExit(f"bench/api.py: load generator failed: {done.stdout}{done.stderr}")
    out = json.loads(line.removeprefix("BENCHJSON "))
    out["requests_per_s"] = out["requests"] / out["duration_s"]
    out["server_cpu_cores"] = (s1 - s0) / wall
    out["generator_cpu_cores"] = (g1 - g0) / wall
    return out


def phase(
    server: Server, seconds: float, warmup: float, etag: bool, paced: bool, wrk: str | None,
    script: Path,
) -> dict:  # fmt: skip
    load(server, warmup, etag, wrk, script, paced)
    return load(server, seconds, etag, wrk, script, paced)


def limit_of(r: dict) -> str:
    """Which side was saturated: a core is 1.0 (uvicorn's event loop and wrk use one each)."""
    server, gen = r["server_cpu_cores"], r["generator_cpu_cores"]
    if server + gen > 1.8:
        return "machine (both cores busy)"
    return "server" if server >= gen else "generator"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="1 s per phase")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per phase [10]")
    ap.add_argument("--serve", choices=("asgi", "fastapi", "service"), help=argparse.SUPPRESS)
    ap.add_argument("--generate", metavar="URL", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", help=argparse.SUPPRESS)
    ap.add_argument("--period-s", type=float, default=60.0, help=argparse.SUPPRESS)
    ap.add_argument("--ready", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.data_dir, args.period_s, args.ready)
        return
    if args.generate:
        r = asyncio.run(
            _generate(
                args.generate,
                args.seconds,
                os.environ["BENCH_ETAG"],
                os.environ["BENCH_AUTH"],
                os.environ["BENCH_DELAY_MS"],
            )
        )
        print("BENCHJSON " + json.dumps(r))
        return

    seconds = args.seconds or (1.0 if args.quick else 10.0)
    warmup = 1.0 if args.quick else 2.0
    wrk = shutil.which("wrk")
    t0 = time.time()
    phases: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="linetwin-bench-api-") as tmp:
        data = Path(tmp)
        script = data / "poll.lua"
        script.write_text(WRK_LUA)
        log = data / "servers.log"
        runs = [
            ("asgi", 60.0, [("bare_asgi", False, False)]),
            ("fastapi", 60.0, [("bare_fastapi", False, False)]),
            (
                "service",
                60.0,
                [
                    ("service_304_running", True, False),
                    ("service_200_running", False, False),
                    ("service_304_paced_running", True, True),
                ],
            ),
            ("service", 1e9, [("service_304_paused", True, False)]),
        ]
        try:
            for kind, period_s, measured in runs:
                server = Server(kind, data, period_s, log)
                try:
                    for name, etag, paced in measured:
                        phases[name] = phase(server, seconds, warmup, etag, paced, wrk, script)
                        phases[name]["limit"] = "none (paced)" if paced else limit_of(phases[name])
                finally:
                    server.stop()
        except BaseException:
            sys.stderr.write(log.read_text() if log.exists() else "")
            raise
    ref = phases["bare_asgi"]["requests_per_s"]
    r304 = phases["service_304_running"]
    ratios = {
        "service_304_vs_bare_asgi": r304["requests_per_s"] / ref,
        "service_200_vs_bare_asgi": phases["service_200_running"]["requests_per_s"] / ref,
        "bare_fastapi_vs_bare_asgi": phases["bare_fastapi"]["requests_per_s"] / ref,
        "service_304_running_vs_paused": r304["requests_per_s"]
        / phases["service_304_paused"]["requests_per_s"],
    }
    targets = {
        "service_304_vs_bare_asgi_min": 0.40,
        "p99_ms_max_32_pollers": 10.0,
        "running_vs_paused_min": 0.80,
    }
    met = {
        "service_304_vs_bare_asgi": ratios["service_304_vs_bare_asgi"] >= 0.40,
        "p99_304_running": r304["p99_ms"] <= 10.0,
        "p99_200_running": phases["service_200_running"]["p99_ms"] <= 10.0,
        "p99_304_paced_running": phases["service_304_paced_running"]["p99_ms"] <= 10.0,
        "running_vs_paused": ratios["service_304_running_vs_paused"] >= 0.80,
    }
    cmd = "python bench/api.py" + (" --quick" if args.quick else "")
    if args.seconds:
        cmd += f" --seconds {args.seconds:g}"
    out = {
        "bench": "api-setpoints",
        "command": cmd,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
        "load": {
            "generator": "wrk -t1 (Lua: follows ETags)" if wrk else "httpx asyncio",
            "paced_poll_interval_ms": PACED_MS,
            "connections": CONNECTIONS,
            "seconds_per_phase": seconds,
            "warmup_s": warmup,
            "note": (
                f"loopback; the generator shares the machine's {os.cpu_count()} cores with the "
                "server process (its event loop plus, for the service, the twin and controller "
                "threads): a core is 1.0 in the cpu figures"
            ),
        },
        "uvicorn": "log_level=info, access_log=False, lifespan=off, loop/http auto "
        "(uvloop, httptools)",
        "phases": phases,
        "ratios": ratios,
        "targets": targets,
        "met": met,
        "wall_seconds": time.time() - t0,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
