#!/usr/bin/env python3
"""Writes the small seed corpus for the fuzz targets (stdlib only). Run from this folder:
   python3 make_corpus.py
The tokenizer seeds are copies of tests/fixtures/tokenizers/*/tokenizer.json."""
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def st_file(entries, buf, meta=None, pad=True):
    header = {}
    if meta is not None:
        header["__metadata__"] = meta
    header.update(entries)
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + buf


def safetensors_seeds():
    f32 = struct.pack("<4f", 1.0, -2.0, 0.5, 3.0)
    f16 = struct.pack("<4H", 0x3C00, 0xC000, 0x0001, 0x7C00)
    bf16 = struct.pack("<2H", 0x3F80, 0x7FC0)
    i64 = struct.pack("<2q", 1, -1)
    return {
        "f32.safetensors": st_file({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}},
                                   f32, {"format": "pt"}),
        "mixed.safetensors": st_file({
            "a": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8]},
            "b": {"dtype": "BF16", "shape": [2], "data_offsets": [8, 12]},
            "c": {"dtype": "I64", "shape": [2], "data_offsets": [12, 28]},
            "e": {"dtype": "F8_E4M3", "shape": [0], "data_offsets": [28, 28]},
            "s": {"dtype": "F64", "shape": [], "data_offsets": [28, 36]}},
            f16 + bf16 + i64 + struct.pack("<d", 2.5), pad=False),
        "empty.safetensors": st_file({}, b""),
        "bad_offsets.safetensors": st_file({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 99]}}, f32),
        "bad_overlap.safetensors": st_file({
            "a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
            "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}, bytes(8)),
    }


def npy_file(descr, shape, data, major=1):
    d = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    pre = 10 if major == 1 else 12
    d += " " * (-(pre + len(d) + 1) % 64) + "\n"
    ln = struct.pack("<H", len(d)) if major == 1 else struct.pack("<I", len(d))
    return b"\x93NUMPY" + bytes([major, 0]) + ln + d.encode() + data


def npy_seeds():
    return {
        "f4.npy": npy_file("<f4", "(2, 2)", struct.pack("<4f", 1, 2, 3, 4)),
        "f8.npy": npy_file("<f8", "(3,)", struct.pack("<3d", 1, 2, 3), major=2),
        "f2.npy": npy_file("<f2", "()", struct.pack("<H", 0x3C00)),
        "be.npy": npy_file(">f4", "(1, 0, 2)", b""),
    }


def main():
    for sub, seeds in (("safetensors", safetensors_seeds()), ("npy", npy_seeds())):
        os.makedirs(os.path.join(HERE, sub), exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(HERE, sub, name), "wb") as f:
                f.write(data)
    fixtures = os.path.join(HERE, "..", "..", "fixtures", "tokenizers")
    os.makedirs(os.path.join(HERE, "tokenizer_json"), exist_ok=True)
    for kind in sorted(os.listdir(fixtures)):
        src = os.path.join(fixtures, kind, "tokenizer.json")
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(HERE, "tokenizer_json", kind + ".json"))


if __name__ == "__main__":
    main()
