"""The weight-sync file on one node: a safetensors file in shared memory that the learner rewrites in
place at every sync and the engine reads through a mapping.

A fresh file per sync costs the learner a serialised copy of every tensor plus new shared-memory pages
(at SmolLM2-135M 540 MB, measured below a second to over a second a sync), and the engine a second
copy before vLLM's own. Here the layout (the header) is fixed at the first write; later writes copy
each tensor into its place in the mapped file, and the reader's tensors are views of a private mapping
(no copy until the engine copies them into its parameters). The file stays a valid safetensors file
(any reader can open it); its owner (the driver) removes it.
"""
from __future__ import annotations

import json
import os
import struct

import torch

DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32",
          torch.uint8: "U8", torch.bool: "BOOL"}
BY_NAME = {v: k for k, v in DTYPES.items()}


def layout(tensors: dict[str, torch.Tensor]) -> tuple[bytes, dict[str, tuple[int, int]]]:
    """The safetensors header (8-byte length + JSON padded to 8 bytes) and each tensor's byte range in the data."""
    head, spans, off = {}, {}, 0
    for k, v in tensors.items():
        if v.dtype not in DTYPES:
            raise TypeError(f"weight {k!r}: dtype {v.dtype} has no safetensors name here ({', '.join(map(str, DTYPES))})")
        n = v.numel() * v.element_size()
        head[k] = {"dtype": DTYPES[v.dtype], "shape": list(v.shape), "data_offsets": [off, off + n]}
        spans[k] = (off, off + n)
        off += n
    h = json.dumps(head, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h, spans


def _views(buf: torch.Tensor, start: int, meta: dict[str, tuple[torch.dtype, list[int], int, int]]) -> dict:
    return {k: buf[start + a : start + b].view(dtype).view(shape) for k, (dtype, shape, a, b) in meta.items()}


class Writer:
    """Writes a state dict to `path`, in place when the file is this writer's with the same layout."""

    def __init__(self):
        self.path, self.header, self.views = None, None, None

    def write(self, path: str, tensors: dict[str, torch.Tensor]) -> str:
        header, spans = layout(tensors)
        if path != self.path or header != self.header or not os.path.exists(path):
            size = len(header) + (max(b for _, b in spans.values()) if spans else 0)
            with open(path, "wb") as f:
                f.write(header)
                f.truncate(size)
            buf = torch.from_file(path, shared=True, size=size, dtype=torch.uint8)
            self.views = _views(buf, len(header), {k: (v.dtype, list(v.shape), *spans[k]) for k, v in tensors.items()})
            self.path, self.header = path, header
        with torch.no_grad():
            for k, v in tensors.items():
                self.views[k].copy_(v)
        return path


def read(path: str) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors as views of a private (copy-on-write) mapping of it."""
    with open(path, "rb") as f:
        header = _header(f)
    meta = _meta(header)
    if meta is None:  # a dtype not mapped here: safetensors' own reader
        from safetensors.torch import load_file

        return load_file(path)
    buf = torch.from_file(path, shared=False, size=os.path.getsize(path), dtype=torch.uint8)
    return _views(buf, 8 + len(header), meta)


class Reader:
    """Reads the sync file through one mapping kept while the file stays the same (path, inode, size,
    header): the learner rewrites it in place, which a shared mapping sees, so a sync reads pages already
    mapped instead of faulting every one in again (SmolLM2-135M: 8,209 faults, 0.02 s of a 0.15-s
    re-pack; BENCHMARKS.md). Read-only: a stray write is a crash, never a private copy that would stop
    following the file. A file's memory stays while mapped, deleted or not: `close` releases it."""

    def __init__(self):
        self.key, self.tensors = None, None

    def read(self, path: str) -> dict[str, torch.Tensor] | None:
        """The file's tensors, as views of the kept mapping; None for a dtype not mapped here."""
        import mmap
        import warnings

        with open(path, "rb") as f:
            header, st = _header(f), os.fstat(f.fileno())
            key = (path, st.st_dev, st.st_ino, st.st_size, header)
            if key != self.key:
                self.close()
                meta = _meta(header)
                if meta is None:
                    return None
                view = mmap.mmap(f.fileno(), st.st_size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
                with warnings.catch_warnings():  # torch warns that the buffer is read-only: meant
                    warnings.simplefilter("ignore", UserWarning)
                    buf = torch.frombuffer(view, dtype=torch.uint8)
                self.key, self.tensors = key, _views(buf, 8 + len(header), meta)
        return self.tensors

    def close(self) -> None:
        self.key, self.tensors = None, None


def _header(f) -> bytes:
    n = struct.unpack("<Q", f.read(8))[0]
    return f.read(n)


def _meta(header: bytes) -> dict | None:
    head = json.loads(header)
    head.pop("__metadata__", None)
    if any(m["dtype"] not in BY_NAME for m in head.values()):
        return None
    return {k: (BY_NAME[m["dtype"]], m["shape"], *m["data_offsets"]) for k, m in head.items()}
