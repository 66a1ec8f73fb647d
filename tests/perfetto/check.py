"""Reads a Perfetto trace with Perfetto's own generated classes (the
`perfetto` package's perfetto_trace_pb2, installed by `cargo xtask setup`
into target/perfetto-py) and prints what it holds as one JSON document, for
tests/tests/export.rs to compare with the timeline it was exported from.

Usage: check.py TRACE

Everything is read through the real schema: a field the schema does not
know is counted in `unknown_fields`, a slice end without a begin on its
track (or a begin never ended) in `errors`.
"""

import json
import sys

from google.protobuf.unknown_fields import UnknownFieldSet
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb


def unknown(msg):
    """Fields of `msg` and of every message under it the schema lacks."""
    n = len(UnknownFieldSet(msg))
    for field, value in msg.ListFields():
        if field.message_type is None:
            continue
        if field.is_repeated:
            n += sum(unknown(v) for v in value)
        else:
            n += unknown(value)
    return n


def annotations(event):
    out = {}
    for a in event.debug_annotations:
        which = a.WhichOneof("value")
        out[a.name] = getattr(a, which) if which else None
    return out


def main(path):
    trace = pb.Trace()
    with open(path, "rb") as f:
        trace.ParseFromString(f.read())
    doc = {
        "packets": len(trace.packet),
        "unknown_fields": 0,
        "errors": [],
        "tracks": {},
        "slices": [],
        "instants": [],
        "counters": {},
    }
    open_slices = {}
    sequences = set()
    for packet in trace.packet:
        doc["unknown_fields"] += unknown(packet)
        sequences.add(packet.trusted_packet_sequence_id)
        if packet.HasField("track_descriptor"):
            d = packet.track_descriptor
            track = {
                "name": d.name if d.HasField("name") else None,
                "parent": d.parent_uuid if d.HasField("parent_uuid") else None,
                "pid": d.process.pid if d.HasField("process") else None,
                "process_name": d.process.process_name if d.HasField("process") else None,
                "counter_unit": (
                    pb.CounterDescriptor.Unit.Name(d.counter.unit)
                    if d.HasField("counter")
                    else None
                ),
            }
            if str(d.uuid) in doc["tracks"]:
                doc["errors"].append(f"track {d.uuid} described twice")
            doc["tracks"][str(d.uuid)] = track
        if not packet.HasField("track_event"):
            continue
        e = packet.track_event
        ts = packet.timestamp
        kind = pb.TrackEvent.Type.Name(e.type)
        if str(e.track_uuid) not in doc["tracks"]:
            doc["errors"].append(f"event on undescribed track {e.track_uuid}")
        if kind == "TYPE_SLICE_BEGIN":
            open_slices.setdefault(e.track_uuid, []).append(
                {
                    "track": e.track_uuid,
                    "name": e.name,
                    "begin": ts,
                    "args": annotations(e),
                }
            )
        elif kind == "TYPE_SLICE_END":
            stack = open_slices.get(e.track_uuid)
            if not stack:
                doc["errors"].append(f"slice end without begin on track {e.track_uuid}")
                continue
            s = stack.pop()
            s["end"] = ts
            s["end_args"] = annotations(e)
            if ts < s["begin"]:
                doc["errors"].append(f"slice on track {e.track_uuid} ends before it begins")
            doc["slices"].append(s)
        elif kind == "TYPE_INSTANT":
            doc["instants"].append(
                {"track": e.track_uuid, "name": e.name, "ts": ts, "args": annotations(e)}
            )
        elif kind == "TYPE_COUNTER":
            which = e.WhichOneof("counter_value_field")
            value = getattr(e, which) if which else None
            doc["counters"].setdefault(str(e.track_uuid), []).append([ts, value])
        else:
            doc["errors"].append(f"event of type {kind}")
    for stack in open_slices.values():
        for s in stack:
            doc["errors"].append(f"slice {s['name']!r} never ends")
    if len(sequences) != 1:
        doc["errors"].append(f"{len(sequences)} packet sequences")
    json.dump(doc, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
