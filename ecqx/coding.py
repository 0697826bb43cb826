"""The real coded size: a self-contained, decodable bitstream for a :class:`QuantizedModel`.

Quantized layers' integer grid indices are entropy coded losslessly with DeepCABAC, the
context-adaptive binary arithmetic coder of the NNR standard (ISO/IEC 15938-17), through the
low-level ``Encoder``/``Decoder`` of ``nncodec`` (the Fraunhofer HHI reference software). The
indices go straight to the coder: nncodec's own quantizer is never used, so nothing is lost.

Container layout (all sizes in bytes, integers little-endian)::

    header  17   magic b"ECQX" | format version (u8) | side-info length (u32) | side-info CRC32 (u32)
                 | CRC32 of the 13 bytes before it (u32)
    side info    zlib-compressed compact JSON: targets, names in order, dtypes, shapes, steps
                 (exact, as float.hex), bit widths, and the length and CRC32 of every payload chunk
    payload      the chunks, back to back, in side-info order

Chunks: one DeepCABAC stream per quantized layer; per pruned-but-float target a DeepCABAC stream
of its non-zero mask plus the surviving values as raw bytes of their dtype; per other parameter
(biases, BatchNorm parameters and buffers, unquantized layers) its raw bytes. Raw bytes are the
host's (little-endian) byte order. CRCs catch accidental corruption and truncation: ``decode``
then raises :class:`BitstreamError` before any byte reaches the (unbounded) CABAC reader.

Crafted input with valid CRCs is safe too: ``decode`` returns a model or raises
:class:`BitstreamError` naming the problem and the entry; it does not crash, recurse without bound
or over-allocate. Before anything is allocated or decoded, :mod:`ecqx.bitstream_checks` inflates
at most 16 MiB of side info (and at most 128 x its compressed size above 1 MiB), refuses JSON
nested deeper than the schema (5 levels) before parsing it, checks every field strictly (dtype
allow-list, rank <= 8, <= 2**31 - 1 elements per tensor, <= 65 536 entries, unique names, finite
steps, 1..32 bits) and every chunk length against its entry: raw chunks exactly count x itemsize,
DeepCABAC chunks at most 1024 values per byte + 2048 (a hard limit of the coder, 30 % above the
densest measured stream). The CABAC reader then runs on a buffer zero-padded for its worst case
(48 bytes per value, address space only), so it cannot read past it, and decoded values are
checked against their dtype. Memory and time stay proportional to the input size: at most 1024
decoded values per payload byte, as for a legitimate all-zero layer.

nncodec is imported lazily, inside the coding functions: importing ``ecqx`` never imports it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import lzma
import math
import mmap
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ecqx.bitstream_checks import BitstreamError, Entry, cabac_read_bound, check_cabac_count, read_side_info
from ecqx.quantized import QuantizedLayer, QuantizedModel

MAGIC = b"ECQX"
FORMAT_VERSION = 1
_HEAD = struct.Struct("<4sBII")  # magic, version, side-info length, side-info CRC32
_HEAD_CRC = struct.Struct("<I")
HEADER_BYTES = _HEAD.size + _HEAD_CRC.size  # 17
_CABAC_UNARY_LENGTH = 10  # number of greater-than-x flags; the NNR default (cabac_unary_length_minus1 = 9)
_MAX_ABS_LEVEL = 2**31 - 1
INSTALL_HINT = "pip install pybind11==3.1.0 wheel==0.48.0 && pip install --no-deps --no-build-isolation nncodec==2.1.3"
_INT_VIEW = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


@dataclass
class EncodedModel:
    """A coded model. All sizes are in bytes; ``total_bytes = weight_bytes + float_bytes + side_bytes``.

    bitstream: the complete container; ``decode(bitstream)`` gives the model back bit-exactly.
    weight_bytes: DeepCABAC payload of the quantized layers' indices.
    float_bytes: payload of every other parameter (pruned-but-float targets: coded mask plus
        raw survivors; the rest: raw bytes of their dtype).
    side_bytes: header, side info (names, shapes, dtypes, steps, bits, chunk lengths and CRCs).
    encode_seconds: wall-clock time of :func:`encode` (seconds).
    codec: what was done, in words.
    layer_bytes: payload bytes per state-dict name (side info excluded).
    """

    bitstream: bytes
    total_bytes: int
    weight_bytes: int
    float_bytes: int
    side_bytes: int
    encode_seconds: float
    codec: str
    layer_bytes: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------- DeepCABAC (nncodec) access


def _deepcabac() -> Any:
    """nncodec's compiled DeepCABAC module, or an ImportError that says how to install it."""
    try:
        return importlib.import_module("nncodec.extensions.deepCABAC")
    except ImportError as err:
        raise ImportError(
            f"ecqx.coding needs nncodec's DeepCABAC extension ({err}). Install it with `make venv`, or: {INSTALL_HINT}"
        ) from err


def _cabac_encode(values: np.ndarray) -> bytes:
    """DeepCABAC stream of a flat int32 array (empty bytes for an empty array)."""
    if values.size == 0:
        return b""
    dc = _deepcabac()
    enc = dc.Encoder()
    enc.initCtxModels(_CABAC_UNARY_LENGTH, 1)  # param_opt_flag=1: best context initialization per tensor
    # qindex, dq_flag (0: uniform grid, no trellis), scan_order 0, general_profile_idc 0,
    # parent_node_id_present_flag 0, rowSkipFlag 0, channel-skip list (unused in profile 0),
    # history-dependent significance off, codebook size/zero offset 0 (plain integers).
    enc.encodeLayer(values, 0, 0, 0, 0, 0, np.zeros(1, np.int32), dc.HdspMode.AlwaysOff, np.zeros(2, np.int8), 0, 0)
    return enc.finish().tobytes()


def _padded(chunk: bytes, size: int, what: str) -> tuple[mmap.mmap, np.ndarray]:
    """``chunk`` followed by zeros up to ``size`` bytes, in a private anonymous mapping: pages past
    the chunk are never written, so they cost address space only (reads map the kernel's zero page)."""
    try:
        mapping = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | getattr(mmap, "MAP_NORESERVE", 0))
    except (OSError, OverflowError, ValueError) as err:
        raise BitstreamError(f"{what}: cannot map {size} bytes for the CABAC reader ({err})") from err
    buf = np.frombuffer(mapping, dtype=np.uint8)
    buf[: len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
    return mapping, buf


def _cabac_decode(chunk: bytes, count: int, what: str) -> np.ndarray:
    """Decode ``count`` int32 values from one DeepCABAC stream; the whole chunk must be consumed."""
    check_cabac_count(count, len(chunk), what)  # also done on the side info; this is the point of use
    if count == 0:
        return np.zeros(0, np.int32)
    dc = _deepcabac()
    # The reader has no length bound: give it all it can consume for `count` values, whatever the bytes.
    _mapping, buf = _padded(chunk, len(chunk) + cabac_read_bound(count), what)
    out = np.zeros(count, np.int32)
    dec = dc.Decoder()
    try:
        dec.setStream(buf)
        dec.initCtxModels(_CABAC_UNARY_LENGTH)
        dec.decodeLayer(out, 0, 0, 0, 0, dc.HdspMode.AlwaysOff, np.zeros(2, np.int8), 0, 0)
        used = dec.finish()
    except RuntimeError as err:  # nncodec's CHECK, e.g. no terminating bin
        raise BitstreamError(f"{what}: invalid DeepCABAC stream ({str(err).strip()[:200]})") from err
    if used != len(chunk):
        raise BitstreamError(f"{what}: DeepCABAC read {used} bytes of a {len(chunk)}-byte chunk")
    return out


def _codec_description() -> str:
    """The ``codec`` string of :class:`EncodedModel`."""
    try:
        version = importlib.metadata.version("nncodec")
    except importlib.metadata.PackageNotFoundError:
        version = "(unknown version)"
    return (
        f"nncodec {version} DeepCABAC (URQ, profile 0, optimized context init), indices lossless; "
        "pruned float targets: DeepCABAC non-zero mask + raw survivors; other params raw bytes of their dtype; "
        f"ecqx container v{FORMAT_VERSION} (zlib JSON side info, CRC32 per chunk)"
    )


# ---------------------------------------------------------------- tensors <-> bytes


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _raw_bytes(t: Tensor) -> bytes:
    """The tensor's elements as raw bytes of its own dtype (C order)."""
    if t.numel() == 0:
        return b""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _from_raw(data: bytes, dtype: torch.dtype, count: int, what: str) -> Tensor:
    """Inverse of :func:`_raw_bytes` for ``count`` elements (flat)."""
    if len(data) != count * dtype.itemsize:
        raise BitstreamError(f"{what}: {len(data)} bytes, expected {count} x {dtype.itemsize} for {dtype}")
    if dtype == torch.bool and data.translate(None, b"\0\1"):
        raise BitstreamError(f"{what}: bool bytes other than 0 and 1")
    if count == 0:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dtype)


def _nonzero_mask(flat: Tensor) -> Tensor:
    """True where the bit pattern is not all zeros (so -0.0 counts as a survivor and round-trips)."""
    return flat.view(_INT_VIEW[flat.element_size()]) != 0


# ---------------------------------------------------------------- encode


def _chunk(chunks: list[bytes], data: bytes) -> list[int]:
    """Append a payload chunk; its side-info reference [length in bytes, CRC32]."""
    chunks.append(data)
    return [len(data), zlib.crc32(data)]


def _encode_quantized(name: str, layer: QuantizedLayer, chunks: list[bytes]) -> dict[str, Any]:
    levels = layer.levels.detach().cpu()
    if levels.is_floating_point() or levels.is_complex() or levels.dtype == torch.bool:
        raise ValueError(f"{name}: levels must be an integer tensor, got {levels.dtype}")
    wide = levels.reshape(-1).to(torch.int64)
    if wide.numel() and int(wide.abs().max()) > _MAX_ABS_LEVEL:
        raise ValueError(f"{name}: levels beyond ±{_MAX_ABS_LEVEL} cannot be coded")
    ref = _chunk(chunks, _cabac_encode(np.ascontiguousarray(wide.to(torch.int32).numpy())))
    entry = {"n": name, "d": _dtype_name(levels.dtype), "s": list(levels.shape)}
    return entry | {"step": float(layer.step).hex(), "bits": int(layer.bits), "c": [ref]}


def _encode_float(name: str, tensor: Tensor, pruned: bool, chunks: list[bytes]) -> dict[str, Any]:
    t = tensor.detach().cpu().contiguous()
    entry = {"n": name, "d": _dtype_name(t.dtype), "s": list(t.shape)}
    if not (pruned and t.is_floating_point() and t.element_size() in _INT_VIEW):
        return entry | {"k": "raw", "c": [_chunk(chunks, _raw_bytes(t))]}
    flat = t.reshape(-1)
    mask = _nonzero_mask(flat)
    mask_ref = _chunk(chunks, _cabac_encode(mask.to(torch.int32).numpy()))
    return entry | {"k": "sparse", "c": [mask_ref, _chunk(chunks, _raw_bytes(flat[mask]))]}


def _check_model(qm: QuantizedModel) -> None:
    both = set(qm.quantized) & set(qm.float_params)
    if both:
        raise ValueError(f"names both quantized and in float_params: {sorted(both)}")
    missing = [t for t in qm.targets if t not in qm.quantized and t not in qm.float_params]
    if missing:
        raise ValueError(f"targets missing from the model: {missing}")


def _header(side: bytes) -> bytes:
    head = _HEAD.pack(MAGIC, FORMAT_VERSION, len(side), zlib.crc32(side))
    return head + _HEAD_CRC.pack(zlib.crc32(head))


def encode(qm: QuantizedModel) -> EncodedModel:
    """Code ``qm`` into one self-contained bitstream; sizes in the result are in bytes."""
    start = time.perf_counter()
    _check_model(qm)
    chunks: list[bytes] = []
    quantized = [_encode_quantized(n, layer, chunks) for n, layer in qm.quantized.items()]
    weight_bytes = sum(map(len, chunks))
    pruned = set(qm.targets) - set(qm.quantized)
    floats = [_encode_float(n, t, n in pruned, chunks) for n, t in qm.float_params.items()]
    info = {"targets": list(qm.targets), "quantized": quantized, "float": floats}
    side = zlib.compress(json.dumps(info, separators=(",", ":")).encode("utf-8"), 9)
    bitstream = _header(side) + side + b"".join(chunks)
    payload = sum(map(len, chunks))
    return EncodedModel(
        bitstream=bitstream,
        total_bytes=len(bitstream),
        weight_bytes=weight_bytes,
        float_bytes=payload - weight_bytes,
        side_bytes=len(bitstream) - payload,
        encode_seconds=time.perf_counter() - start,
        codec=_codec_description(),
        layer_bytes={e["n"]: sum(ref[0] for ref in e["c"]) for e in quantized + floats},
    )


# ---------------------------------------------------------------- decode


def _read_header(data: bytes) -> bytes:
    """Check the header; the (compressed) side info, its CRC32 checked."""
    if len(data) < HEADER_BYTES:
        raise BitstreamError(f"truncated: {len(data)} bytes, shorter than the {HEADER_BYTES}-byte header")
    magic, version, side_len, side_crc = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise BitstreamError(f"not an ecqx bitstream: magic {magic!r}, expected {MAGIC!r}")
    if _HEAD_CRC.unpack_from(data, _HEAD.size)[0] != zlib.crc32(data[: _HEAD.size]):
        raise BitstreamError("corrupted header: CRC32 mismatch")
    if version != FORMAT_VERSION:
        raise BitstreamError(f"unsupported format version {version} (this reader knows {FORMAT_VERSION})")
    side = data[HEADER_BYTES : HEADER_BYTES + side_len]
    if len(side) < side_len:
        raise BitstreamError(f"truncated: side info needs {side_len} bytes, {len(side)} present")
    if zlib.crc32(side) != side_crc:
        raise BitstreamError("corrupted side info: CRC32 mismatch")
    return side


def _split_payload(data: bytes, start: int, entries: list[Entry]) -> list[list[bytes]]:
    """Per entry its payload chunks, after checking the total length and every chunk's CRC32."""
    expected = start + sum(length for e in entries for length, _ in e.chunks)
    if len(data) < expected:
        raise BitstreamError(f"truncated: {len(data)} bytes, the side info announces {expected}")
    if len(data) > expected:
        raise BitstreamError(f"{len(data) - expected} unexpected trailing bytes after the payload")
    out, pos = [], start
    for e in entries:
        pieces = []
        for i, (length, crc) in enumerate(e.chunks):
            piece = data[pos : pos + length]
            if zlib.crc32(piece) != crc:
                raise BitstreamError(f"corrupted payload: chunk {i} of {e.name!r} fails its CRC32 check")
            pieces.append(piece)
            pos += length
        out.append(pieces)
    return out


def _decode_quantized(e: Entry, pieces: list[bytes]) -> QuantizedLayer:
    values = _cabac_decode(pieces[0], e.count, f"indices of {e.name!r}")
    limits = np.iinfo(_dtype_name(e.dtype))
    if values.size and (int(values.min()) < limits.min or int(values.max()) > limits.max):
        raise BitstreamError(f"indices of {e.name!r}: values outside the range of {e.dtype}")
    levels = torch.from_numpy(values).to(e.dtype).reshape(e.shape)
    return QuantizedLayer(levels=levels, step=e.step, bits=e.bits)


def _decode_float(e: Entry, pieces: list[bytes]) -> Tensor:
    what = f"values of {e.name!r}"
    if e.kind == "raw":
        return _from_raw(pieces[0], e.dtype, e.count, what).reshape(e.shape)
    flags = _cabac_decode(pieces[0], e.count, f"mask of {e.name!r}")
    if flags.size and (int(flags.min()) < 0 or int(flags.max()) > 1):
        raise BitstreamError(f"mask of {e.name!r}: values other than 0 and 1")
    mask = torch.from_numpy(flags) != 0
    out = torch.zeros(e.count, dtype=e.dtype)
    out[mask] = _from_raw(pieces[1], e.dtype, int(mask.sum()), what)
    return out.reshape(e.shape)


def decode(data: bytes) -> QuantizedModel:
    """Rebuild the model from :attr:`EncodedModel.bitstream`, bit-exactly (names, order, dtypes, shapes).

    Raises :class:`BitstreamError` naming the problem for a truncated, corrupted, foreign or crafted
    stream (see the module docstring for what is checked); never another exception for bad input.
    """
    data = bytes(memoryview(data))  # bytes-like only: bytes(n) of an int would allocate n bytes
    side = _read_header(data)
    entries, nq, targets = read_side_info(side)
    pieces = _split_payload(data, HEADER_BYTES + len(side), entries)
    quantized = {e.name: _decode_quantized(e, p) for e, p in zip(entries[:nq], pieces[:nq])}
    floats = {e.name: _decode_float(e, p) for e, p in zip(entries[nq:], pieces[nq:])}
    return QuantizedModel(quantized=quantized, float_params=floats, targets=list(targets))


# ---------------------------------------------------------------- general-purpose baselines


def baseline_sizes(qm: QuantizedModel) -> dict[str, int]:
    """Sizes in bytes of the quantized layers' indices under general-purpose coding.

    The indices of all quantized layers are concatenated (model order) as int8, or int16/int32
    where a value does not fit. raw_bytes: that array; packed_bytes: fixed-length b-bit codes
    (sum of ceil(N*bits/8) per layer); zlib_bytes: zlib level 9; lzma_bytes: xz preset 9 extreme.
    """
    flats = [layer.levels.detach().cpu().reshape(-1).to(torch.int64) for layer in qm.quantized.values()]
    values = torch.cat(flats) if flats else torch.zeros(0, dtype=torch.int64)
    dtype = torch.int32
    for candidate in (torch.int8, torch.int16):
        info = torch.iinfo(candidate)
        if values.numel() == 0 or (int(values.min()) >= info.min and int(values.max()) <= info.max):
            dtype = candidate
            break
    raw = values.to(dtype).numpy().tobytes()
    return {
        "raw_bytes": len(raw),
        "packed_bytes": sum(math.ceil(layer.levels.numel() * layer.bits / 8) for layer in qm.quantized.values()),
        "zlib_bytes": len(zlib.compress(raw, 9)),
        "lzma_bytes": len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)),
    }
