#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets from the wire test vectors.

Usage: python3 fuzz/seeds.py [path/to/vectors.md]   (default: the repository's
PROTOCOL.md, whose §6 holds the vectors). Seeds go to fuzz/corpus/<target>/seed-*, which is not
committed; rerunning overwrites them. See fuzz/README.md for each target's input format.
"""

import re
import sys
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
DEFAULT_VECTORS = FUZZ.parent / "PROTOCOL.md"
HEX = re.compile(r"^[0-9a-f]+$")

# Indexes into uds_fuzz::LIMITS.
LIMIT_DEFAULT = 11  # 16 MiB
LIMIT_1024 = 9
LIMIT_5 = 3


def vector_streams(text):
    """(name, bytes) for every table row of the vectors: the hex in its bytes column."""
    out = []
    col = None
    for line in text.splitlines():
        if not line.startswith("|"):
            col = None
            continue
        # `header|body` has a `|` inside backticks: hide it before splitting cells.
        row = re.sub(r"`[^`]*`", lambda m: m.group(0).replace("|", ""), line.strip().strip("|"))
        cells = [c.strip() for c in row.split("|")]
        if col is None:  # a table's header row
            col = next((i for i, c in enumerate(cells) if "bytes" in c or c == "header"), -1)
            continue
        if col < 0 or col >= len(cells) or set(row) <= set("-: |"):
            continue
        data = b""
        for span in re.findall(r"`([^`]*)`", cells[col]):
            h = span.replace(" ", "").replace("\\", "")
            if HEX.match(h) and len(h) % 2 == 0:
                data += bytes.fromhex(h)
        if data:
            out.append((cells[0].replace(" ", "_").replace("/", "_") or "row", data))
    return out


def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def frame(body):
    return varint(len(body) << 1) + body


def frames(stream):
    """Bodies of the complete frames at the start of stream (for envelope seeds)."""
    out, pos = [], 0
    while pos < len(stream):
        x, shift, i = 0, 0, pos
        while i < len(stream) and i - pos < 10:
            b = stream[i]
            x |= (b & 0x7F) << shift
            shift += 7
            i += 1
            if b < 0x80:
                break
        else:
            return out
        if x & 1 or i + (x >> 1) > len(stream):
            return out
        out.append(stream[i : i + (x >> 1)])
        pos = i + (x >> 1)
    return out


def envelope(id=0, exp=0, method=b"", data=b"", err_type=0, err=b"", cancel=False, credit=0,
             item=False, end=False, client_stream=False, keepalive_ms=0):
    def key(n, w):
        return varint((n << 3) | w)

    out = b""
    if id:
        out += key(1, 0) + varint(id)
    if exp:
        out += key(2, 0) + varint(exp & (2**64 - 1))
    if method:
        out += key(3, 2) + varint(len(method)) + method
    if data:
        out += key(4, 2) + varint(len(data)) + data
    if err_type:
        out += key(5, 0) + varint(err_type)
    if err:
        out += key(6, 2) + varint(len(err)) + err
    if cancel:
        out += key(16, 0) + b"\x01"
    if item:
        out += key(18, 0) + b"\x01"
    if end:
        out += key(19, 0) + b"\x01"
    if credit:
        out += key(20, 0) + varint(credit)
    if client_stream:
        out += key(22, 0) + b"\x01"
    if keepalive_ms:
        out += key(23, 0) + varint(keepalive_ms)
    return out


def write(target, name, data):
    d = FUZZ / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data)


def main():
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_VECTORS
    streams = vector_streams(path.read_text())
    if len(streams) < 30:
        sys.exit(f"only {len(streams)} vectors found in {path}: has its format changed?")
    by_name = dict(streams)
    exp = 4102444800000000000
    extra = {
        "cancel": frame(envelope(id=1, exp=exp, method=b"/echo", data=b"x"))
        + frame(envelope(id=1, cancel=True)),
        "stream_credit": frame(envelope(id=3, method=b"/stream", data=b"ab", credit=1))
        + frame(envelope(id=3, credit=5)),
        "fail_app": frame(envelope(id=4, method=b"/fail")) + frame(envelope(id=5, method=b"/app", data=b"e")),
        "dup_id": frame(envelope(id=6, method=b"/echo", data=b"a")) * 2,
        "many": b"".join(frame(envelope(id=i, method=b"/echo", data=b"q")) for i in range(1, 9)),
        "id0": frame(envelope(method=b"/echo", data=b"z")),
        "upload": frame(envelope(id=7, method=b"/upload", client_stream=True, keepalive_ms=100))
        + frame(envelope(id=7, data=b"ab", item=True))
        + frame(envelope(id=7, data=b"c", item=True))
        + frame(envelope(id=7, end=True)),
        "upload_unary": frame(envelope(id=8, method=b"/upload", data=b"x")),
        "bidi": frame(envelope(id=9, method=b"/bidi", client_stream=True, credit=2))
        + frame(envelope(id=9, data=b"q", item=True))
        + frame(envelope(id=9, end=True)),
        "item_no_call": frame(envelope(id=10, data=b"q", item=True)) + frame(envelope(id=10, end=True)),
    }
    client_to_server = [s for n, s in streams if not n.endswith("r") and not n.startswith("S") and not n.startswith("J")]
    everything = b"".join(client_to_server)

    for name, s in list(streams) + list(extra.items()) + [("all_requests", everything)]:
        for limit, seed in [(LIMIT_DEFAULT, 0x07), (LIMIT_DEFAULT, 0x00), (LIMIT_1024, 0x13), (LIMIT_5, 0x05)]:
            write("frame_decoder", f"{name}-{limit}-{seed}", bytes([limit, seed]) + s)
        for i, body in enumerate(frames(s)):
            write("envelope_decoder", f"{name}-{i}", body)
        write("server_conn", name, s)

    s = lambda *names: b"".join(by_name[n] for n in names)  # noqa: E731
    proto = {
        "data_close": s("S1", "S2", "S3"),
        "close_only": s("S3"),
        "stray_ack": s("S4"),
        "close_ack": s("S5", "S7", "S4"),
        "data_close_ack": s("S1", "S3", "S4"),
        "json_frame": frame(b'{"Text":"hello"}'),  # J1, given in prose in PROTOCOL.md
        "empty_frame": b"\x00",
        "unknown_type": frame(b"\x09hello"),
        "data_after_close": s("S3", "S2"),
    }
    for name, data in proto.items():
        for cfg in [LIMIT_DEFAULT << 1, (LIMIT_DEFAULT << 1) | 1, (LIMIT_5 << 1) | 1]:
            write("proto_stream", f"{name}-{cfg}", bytes([cfg]) + data)
    print(f"{len(streams)} vectors from {path} -> {FUZZ / 'corpus'}")


if __name__ == "__main__":
    main()
