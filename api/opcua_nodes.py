"""What the emulator's server puts on its nodes: the variables, a snapshot's column values, and
the certificate check that trusts only the listed clients."""

from __future__ import annotations

from typing import Any

from linetwin.api.opcua_mapping import OpcUaMapping
from linetwin.twin import layout as L
from linetwin.twin.snapshot import Snapshot
from linetwin.twin.spec import LineSpec

_INT_FIELDS = {
    "status",
    "completed",
    "scrapped",
    "failures",
    "buffer_level",
    *("released", "good_out", "scrap_total"),
}
_READING_VALID = {"temperature_c": 0, "power_kw": 1, "vibration_mm_s": 2}


def column_values(spec: LineSpec, snap: Snapshot) -> dict[str, tuple[float | int, bool]]:
    """Return scenario 0 of `snap` as `{plant-log column: (value, good)}` for every column.

    `good` is False for a sensor reading whose channel dropped out.
    """
    r = snap.readings
    out: dict[str, tuple[float | int, bool]] = {
        "released": (int(snap.released[0]), True),
        "good_out": (int(snap.good_out[0]), True),
        "scrap_total": (int(snap.scrap_total[0]), True),
    }
    n = spec.n_stations
    for i, st in enumerate(spec.stations):
        p = st.name + "."
        out[p + "status"] = (int(snap.status[0, i]), True)
        out[p + "speed"] = (float(snap.setpoints[0, i, L.S_SPEED]), True)
        out[p + "temperature_setpoint_c"] = (float(snap.setpoints[0, i, L.S_TEMP]), True)
        for name, k in _READING_VALID.items():
            value = (r.temperature_c, r.power_kw, r.vibration_mm_s)[k][0, i]
            out[p + name] = (float(value), bool(r.valid[0, i, k]))
        out[p + "completed"] = (int(snap.completed[0, i]), True)
        out[p + "scrapped"] = (int(snap.scrapped[0, i]), True)
        out[p + "failures"] = (int(snap.failures[0, i]), True)
        out[p + "energy_kwh"] = (float(snap.energy_kwh[0, i]), True)
        out[p + "wear"] = (float(snap.wear[0, i]), True)
        if i < n - 1:
            out[p + "buffer_level"] = (int(snap.buffer_level[0, i]), True)
    return out


async def add_nodes(
    server: Any, spec: LineSpec, mapping: OpcUaMapping, writable: set[str]
) -> dict[str, tuple[Any, Any]]:
    """Add a variable for every node id of `mapping` under a folder named after the line;
    make the `writable` ones writable. Return `{node id: (NodeId, VariantType)}`.

    Status is Int32, counts Int64, the rest Double; the mapping's namespace is registered
    (and more, when node ids use higher namespace indices)."""
    from asyncua import ua

    ids = mapping.node_ids()
    parsed = {nid: ua.NodeId.from_string(nid) for nid in ids}
    top = max((p.NamespaceIndex for p in parsed.values()), default=2)
    idx = await server.register_namespace(mapping.namespace_uri)
    while idx < top:
        idx = await server.register_namespace(f"{mapping.namespace_uri}/{idx + 1}")
    folder = await server.nodes.objects.add_folder(idx, spec.name)
    column_of = {nid: col for col, nid in mapping.columns.items()}
    nodes: dict[str, tuple[Any, Any]] = {}
    for nid in ids:
        col = column_of.get(nid)
        fld = (col or "").rpartition(".")[2]
        vtype = ua.VariantType.Int64 if fld in _INT_FIELDS else ua.VariantType.Double
        if col is None or fld == "status":
            vtype = ua.VariantType.Double if col is None else ua.VariantType.Int32
        init = 0 if vtype != ua.VariantType.Double else 0.0
        name = f"{parsed[nid].NamespaceIndex}:{col or nid.rpartition('=')[2]}"
        node = await folder.add_variable(parsed[nid], name, init, vtype)
        if nid in writable:
            await node.set_writable()
        nodes[nid] = (parsed[nid], vtype)
    return nodes


def trust_only(trusted: set[bytes]) -> Any:
    """Return a certificate validator that accepts exactly the `trusted` DER certificates."""
    from asyncua import ua
    from asyncua.common.utils import ServiceError
    from cryptography.hazmat.primitives.serialization import Encoding

    async def validate(cert: Any, _description: Any) -> None:
        if cert.public_bytes(Encoding.DER) not in trusted:
            raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

    return validate
