"""Time the OPC UA connector against the emulator's server on loopback.

    python bench/opcua.py [--ticks N]

One emulator server (Basic256Sha256 SignAndEncrypt, user and password) over a stepped twin of
the bundled example line (10 stations, 85 mapped nodes), then a connector per read mode at an
interval of 50 ms. Figures: the server's start, the connector's first connection, the latency
from a snapshot being on the server's nodes to its row reaching `on_rows` (p50, p95; about half
the interval is the sampling itself), and the round trip of `write_setpoints` (two nodes, one
Write request). The reference, in the same run: a bare asyncua client with the same security
reading all 85 nodes in one Read request. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from linetwin.api.opcua import OpcUaConnector
from linetwin.api.opcua_certs import demo_certificates
from linetwin.api.opcua_mapping import OpcUaMapping, load_mapping
from linetwin.api.opcua_server import serve_opcua
from linetwin.api.opcua_template import mapping_toml
from linetwin.twin import Twin, bundled_spec
from linetwin.twin.realtime import RealtimeTwin

ENV = {"LINETWIN_OPCUA_PASSWORD": "bench"}


def rounded(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: rounded(v) for k, v in x.items()}
    return round(x, 4) if isinstance(x, float) else x


def quantiles(xs: list[float]) -> dict[str, float]:
    s = sorted(xs)
    return {"p50_ms": 1e3 * statistics.median(s), "p95_ms": 1e3 * s[int(0.95 * (len(s) - 1))]}


async def bare_reads(mapping: OpcUaMapping, n: int) -> list[float]:
    from asyncua import Client, ua
    from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

    sec = mapping.security
    client = Client(mapping.endpoint)
    client.application_uri = sec.application_uri
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        certificate=str(sec.certificate),
        private_key=str(sec.private_key),
        server_certificate=str(sec.server_certificate),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )
    client.set_user(str(sec.username))
    client.set_password(ENV["LINETWIN_OPCUA_PASSWORD"])
    ids = [ua.NodeId.from_string(nid) for nid in mapping.columns.values()]
    out = []
    async with client:
        for _ in range(n):
            t = time.perf_counter()
            await client.uaclient.read_attributes(ids, ua.AttributeIds.Value)
            out.append(time.perf_counter() - t)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=40)
    args = parser.parse_args()
    spec = bundled_spec("example")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out: dict[str, Any] = {"bench": "opcua", "line": spec.name, "ticks": args.ticks}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        certs = demo_certificates(folder / "certs")

        def mapping(mode: str) -> OpcUaMapping:
            path = folder / f"{mode}.toml"
            endpoint = f"opc.tcp://127.0.0.1:{port}/linetwin/"
            path.write_text(mapping_toml(spec, endpoint=endpoint, interval_s=0.05, read_mode=mode))
            return load_mapping(path, spec)

        rt = RealtimeTwin(Twin(spec, 1, seed=1), tick_s=1.0)
        t0 = time.perf_counter()
        server = serve_opcua(
            spec,
            mapping("polling"),
            rt,
            server_certificate=certs["server_certificate"],
            server_private_key=certs["server_private_key"],
            users={"linetwin": ENV["LINETWIN_OPCUA_PASSWORD"]},
        )
        out["server_start_s"] = time.perf_counter() - t0
        out["bare_read_85_nodes"] = quantiles(asyncio.run(bare_reads(mapping("polling"), 40)))
        for mode in ("subscription", "polling"):
            seen: dict[float, float] = {}

            def on_rows(rows: list[dict[str, Any]], seen: dict[float, float] = seen) -> None:
                for r in rows:
                    seen[r["time_s"]] = time.perf_counter()

            c = OpcUaConnector(
                spec, mapping(mode), on_rows, rng=np.random.default_rng(0), environ=ENV
            )
            t0 = time.perf_counter()
            c.start(wait_s=20.0)
            connect_s = time.perf_counter() - t0
            lat = []
            for _ in range(args.ticks):
                snap = rt.tick()
                server.wait_published(snap.time_s)
                t1 = time.perf_counter()
                while snap.time_s not in seen:
                    time.sleep(0.001)
                lat.append(seen[snap.time_s] - t1)
            writes = []
            for k in range(args.ticks):
                t1 = time.perf_counter()
                sp = {"press": {"speed": 1.0 + 0.01 * (k % 10)}, "cure": {"temperature": 190.0}}
                assert c.write_setpoints(sp, "closed").ok
                writes.append(time.perf_counter() - t1)
            c.stop()
            out[mode] = {
                "connect_s": connect_s,
                "row_latency": quantiles(lat),
                "write_round_trip": quantiles(writes),
            }
        server.stop()
    print(json.dumps(rounded(out)))


if __name__ == "__main__":
    main()
