#!/usr/bin/env python3
"""Cross-checks the C .npy and safetensors code against numpy/torch (called by
test_crosscheck.c). The safetensors pip package is not used: the format is written and read by
hand here, so this script is an independent second implementation.

  crosscheck.py npy-check FILE       FILE (written by C) holds arange(24).reshape(2,3,4)*0.5-3 as <f4
  crosscheck.py npy-write DIR        writes f4.npy, f8.npy, i4.npy, fortran.npy with numpy
  crosscheck.py st-write DIR         writes hand.safetensors (F32/F16/BF16/I64/F64) + expected_*.npy
  crosscheck.py st-check FILE SRC    FILE (written by C) holds SRC (a .npy of f32) as F32/F16/BF16
"""
import json
import struct
import sys

import numpy as np


def npy_check(path):
    a = np.load(path)
    want = (np.arange(24, dtype=np.float32).reshape(2, 3, 4) * 0.5 - 3).astype(np.float32)
    assert a.dtype == np.dtype("<f4"), a.dtype
    assert a.shape == (2, 3, 4), a.shape
    assert a.flags["C_CONTIGUOUS"]
    assert np.array_equal(a, want), (a, want)
    with open(path, "rb") as f:
        head = f.read(10)
        hlen = head[8] | (head[9] << 8)
        assert (10 + hlen) % 64 == 0, hlen


def npy_write(d):
    a = (np.arange(12, dtype=np.float32).reshape(3, 4) * 0.25 - 1).astype(np.float32)
    np.save(f"{d}/f4.npy", a)
    np.save(f"{d}/f8.npy", a.astype(np.float64) + 1e-9)
    np.save(f"{d}/i4.npy", np.array([[1, -2], [3, 2147483647]], dtype=np.int32))
    np.save(f"{d}/fortran.npy", np.asfortranarray(a))


def special_values():
    import torch
    vals = [0.0, -0.0, 1.0, -1.0, 0.1, 1e-5, 6e-8, 3e-8, 1e-40, 65504.0, 65520.0, 1e5, 3.0e38,
            float("inf"), float("-inf"), float("nan"), 1.0 + 2 ** -11, 1.0 + 3 * 2 ** -11,
            1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, -123.456, 2 ** -14, 2 ** -24, 2 ** -25]
    g = torch.Generator().manual_seed(0)
    rnd = (torch.randn(200, generator=g) * torch.logspace(-9, 6, 200)).tolist()
    return torch.tensor(vals + rnd, dtype=torch.float32)


def st_write(d):
    import torch
    src = special_values()
    tensors = {
        "f32": src.reshape(-1),
        "f16": src.to(torch.float16),
        "bf16": src.to(torch.bfloat16),
        "ids": torch.tensor([[1, -2, 3], [2 ** 40, 0, -(2 ** 50)]], dtype=torch.int64),
        "f64": torch.tensor([1.5, -2.25, 1e-300], dtype=torch.float64),
    }
    header, blobs, off = {"__metadata__": {"format": "pt", "made_by": "crosscheck.py"}}, [], 0
    # Deliberately unsorted, unaligned order (odd-size first) to test the reader's generality.
    for name in ["f16", "ids", "bf16", "f32", "f64"]:
        t = tensors[name].contiguous()
        raw = t.view(torch.int16).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
        dt = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
              torch.int64: "I64", torch.float64: "F64"}[t.dtype]
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode() + b" " * 3  # odd padding: data is not 8-aligned
    with open(f"{d}/hand.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    np.save(f"{d}/expected_f32.npy", src.numpy())
    np.save(f"{d}/expected_f16.npy", tensors["f16"].float().numpy())
    np.save(f"{d}/expected_bf16.npy", tensors["bf16"].float().numpy())


def st_check(path, src_path):
    import torch
    src = torch.from_numpy(np.load(src_path))
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    buf = data[8 + n:]
    assert n % 8 == 0
    assert header["__metadata__"] == {"format": "pt"}, header["__metadata__"]
    want = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
    names = sorted(k for k in header if k != "__metadata__")
    assert names == ["as_bf16", "as_f16", "as_f32"], names
    for name in names:
        e = header[name]
        b, end = e["data_offsets"]
        dt = want[e["dtype"]]
        raw = bytearray(buf[b:end])
        if dt == torch.bfloat16:
            t = torch.frombuffer(raw, dtype=torch.int16).view(torch.bfloat16)
        else:
            t = torch.frombuffer(raw, dtype=dt)
        t = t.reshape(e["shape"])
        ref = src.reshape(e["shape"]).to(dt)  # torch rounds to nearest even
        # Compare bit patterns; NaNs only need to be NaN in both.
        nan = torch.isnan(ref)
        assert torch.equal(torch.isnan(t), nan), name
        bits = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}[dt]
        diff = (t.view(bits) != ref.view(bits)) & ~nan
        assert not diff.any(), (name, t[diff][:5], ref[diff][:5], src.reshape(e["shape"])[diff][:5])


def main():
    cmd = sys.argv[1]
    if cmd == "npy-check":
        npy_check(sys.argv[2])
    elif cmd == "npy-write":
        npy_write(sys.argv[2])
    elif cmd == "st-write":
        st_write(sys.argv[2])
    elif cmd == "st-check":
        st_check(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
