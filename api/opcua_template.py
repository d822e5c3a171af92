"""Write a complete OPC UA mapping for a line spec, with one regular node naming scheme.

`mapping_toml(spec)` gives the TOML text of a mapping whose node ids are `ns=2;s=STATION.FIELD`
for the plant-log columns and `ns=2;s=STATION.speed_sp` / `STATION.temperature_sp` for the
writable setpoints: the emulator serves exactly these nodes, and `docs/opcua-example.toml` is
this text for the bundled `example` line. A real plant's tags will differ: edit the node ids.
"""

from __future__ import annotations

import json

from linetwin.twin.spec import LineSpec

FIELDS = (
    "status",
    "speed",
    "temperature_setpoint_c",
    "temperature_c",
    "power_kw",
    "completed",
    "scrapped",
    "failures",
    "energy_kwh",
    "buffer_level",
)
"""The plant-log fields the template maps, where the station has them."""


def _q(text: str) -> str:
    return json.dumps(text)  # a TOML basic string is a JSON string for these characters


def mapping_toml(
    spec: LineSpec,
    *,
    endpoint: str = "opc.tcp://127.0.0.1:4840/linetwin/",
    namespace_index: int = 2,
    read_mode: str = "subscription",
    interval_s: float = 1.0,
    time_origin: str = "2026-01-01T00:00:00Z",
    certs: str = "certs",
    username: str = "linetwin",
    password_env: str = "LINETWIN_OPCUA_PASSWORD",
) -> str:
    """Return the TOML text of a mapping of every station of `spec` (see the module doc)."""
    ns = f"ns={namespace_index};s="
    lines = [
        f"# OPC UA mapping of line {spec.name!r} (format: docs/opcua.md).",
        f"line = {_q(spec.name)}",
        "",
        "[server]",
        f"endpoint = {_q(endpoint)}",
        "timeout_s = 4.0",
        "",
        "[security]",
        'policy = "Basic256Sha256"',
        'mode = "SignAndEncrypt"',
        "# Paths are relative to this file's folder.",
        f"certificate = {_q(certs + '/client-cert.der')}",
        f"private_key = {_q(certs + '/client-key.pem')}",
        f"server_certificate = {_q(certs + '/server-cert.der')}",
        'application_uri = "urn:linetwin:opcua-client"',
        f"username = {_q(username)}",
        "# The password is read from this environment variable, never from the file.",
        f"password_env = {_q(password_env)}",
        "",
        "[read]",
        f"mode = {_q(read_mode)}",
        f"interval_s = {float(interval_s)!r}",
        'time_source = "source"',
        f"time_origin = {_q(time_origin)}",
        "",
        "[reconnect]",
        "initial_s = 0.5",
        "max_s = 30.0",
        "",
        "[line_counters]",
    ]
    lines += [f"{c} = {_q(ns + 'line.' + c)}" for c in ("released", "good_out", "scrap_total")]
    last = spec.n_stations - 1
    for i, st in enumerate(spec.stations):
        key = st.name if st.name.replace("_", "").replace("-", "").isalnum() else _q(st.name)
        lines += ["", f"[stations.{key}]"]
        for fld in FIELDS:
            thermal_only = fld in ("temperature_setpoint_c", "temperature_c")
            if (thermal_only and not st.is_thermal) or (fld == "buffer_level" and i == last):
                continue
            lines.append(f"{fld} = {_q(ns + st.name + '.' + fld)}")
        sp = st.setpoints
        writes = [("speed", sp.speed)]
        if sp.temperature is not None:
            writes.append(("temperature", sp.temperature))
        for name, limits in writes:
            node = _q(f"{ns}{st.name}.{name}_sp")
            lines.append(
                f"write.{name} = {{ node = {node}, min = {limits.min!r}, max = {limits.max!r} }}"
            )
    return "\n".join(lines) + "\n"
