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
then raises :class:`BitstreamError` before any byte reaches the (unbounded) CABAC reader. They do
not make the decoder safe against deliberately crafted input.

nncodec is imported lazily, inside the coding functions: importing ``ecqx`` never imports it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import lzma
import math
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ecqx.quantized import QuantizedLayer, QuantizedModel

MAGIC = b"ECQX"
FORMAT_VERSION = 1
_HEAD = struct.Struct("<4sBII")  # magic, version, side-info length, side-info CRC32
_HEAD_CRC = struct.Struct("<I")
HEADER_BYTES = _HEAD.size + _HEAD_CRC.size  # 17
_CABAC_UNARY_LENGTH = 10  # number of greater-than-x flags; the NNR default (cabac_unary_length_minus1 = 9)
_DECODER_PADDING = 64  # zero bytes after a chunk in memory: the CABAC reader has no length bound
_MAX_ABS_LEVEL = 2**31 - 1
INSTALL_HINT = "pip install pybind11==3.1.0 wheel==0.48.0 && pip install --no-deps --no-build-isolation nncodec==2.1.3"
_INT_VIEW = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


class BitstreamError(ValueError):
    """A bitstream that is not a valid, complete, uncorrupted ecqx container."""


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


def _cabac_decode(chunk: bytes, count: int, what: str) -> np.ndarray:
    """Decode ``count`` int32 values from one DeepCABAC stream; the whole chunk must be consumed."""
    if count == 0:
        if chunk:
            raise BitstreamError(f"{what}: {len(chunk)} payload bytes for an empty tensor")
        return np.zeros(0, np.int32)
    if not chunk:
        raise BitstreamError(f"{what}: empty payload for {count} values")
    dc = _deepcabac()
    buf = np.frombuffer(chunk + bytes(_DECODER_PADDING), dtype=np.uint8).copy()
    dec = dc.Decoder()
    dec.setStream(buf)
    dec.initCtxModels(_CABAC_UNARY_LENGTH)
    out = np.zeros(count, np.int32)
    dec.decodeLayer(out, 0, 0, 0, 0, dc.HdspMode.AlwaysOff, np.zeros(2, np.int8), 0, 0)
    used = dec.finish()
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


def _dtype_from_name(name: Any) -> torch.dtype:
    dtype = getattr(torch, name, None) if isinstance(name, str) else None
    if not isinstance(dtype, torch.dtype):
        raise BitstreamError(f"side info names an unknown dtype {name!r}")
    return dtype


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


def _read_side(data: bytes) -> dict[str, Any]:
    """Check the header and side info; the parsed side-info JSON."""
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
    try:
        info = json.loads(zlib.decompress(side).decode("utf-8"))
    except (zlib.error, UnicodeDecodeError, ValueError) as err:
        raise BitstreamError(f"malformed side info: {err}") from err
    _check_side(info)
    return info


def _check_entry(e: Any, quantized: bool) -> None:
    refs = e.get("c") if isinstance(e, dict) else None
    ok = isinstance(e, dict) and isinstance(e.get("n"), str) and isinstance(e.get("s"), list)
    ok = ok and all(isinstance(x, int) and x >= 0 for x in e["s"]) and isinstance(refs, list)
    ok = ok and all(isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) and x >= 0 for x in r) for r in refs)
    if ok and quantized:
        ok = len(refs) == 1 and isinstance(e.get("bits"), int) and isinstance(e.get("step"), str)
    elif ok:
        ok = (e.get("k"), len(refs)) in {("raw", 1), ("sparse", 2)}
    if not ok:
        raise BitstreamError(f"malformed side-info entry: {str(e)[:200]}")
    _dtype_from_name(e.get("d"))


def _check_side(info: Any) -> None:
    if not isinstance(info, dict) or not all(isinstance(info.get(k), list) for k in ("targets", "quantized", "float")):
        raise BitstreamError("malformed side info: expected lists 'targets', 'quantized', 'float'")
    if not all(isinstance(t, str) for t in info["targets"]):
        raise BitstreamError("malformed side info: target names must be strings")
    for e in info["quantized"]:
        _check_entry(e, quantized=True)
    for e in info["float"]:
        _check_entry(e, quantized=False)


def _split_payload(data: bytes, start: int, entries: list[dict[str, Any]]) -> list[list[bytes]]:
    """Per entry its payload chunks, after checking the total length and every chunk's CRC32."""
    expected = start + sum(ref[0] for e in entries for ref in e["c"])
    if len(data) < expected:
        raise BitstreamError(f"truncated: {len(data)} bytes, the side info announces {expected}")
    if len(data) > expected:
        raise BitstreamError(f"{len(data) - expected} unexpected trailing bytes after the payload")
    out, pos = [], start
    for e in entries:
        pieces = []
        for i, (length, crc) in enumerate(e["c"]):
            piece = data[pos : pos + length]
            if zlib.crc32(piece) != crc:
                raise BitstreamError(f"corrupted payload: chunk {i} of {e['n']!r} fails its CRC32 check")
            pieces.append(piece)
            pos += length
        out.append(pieces)
    return out


def _decode_quantized(e: dict[str, Any], pieces: list[bytes]) -> QuantizedLayer:
    count = math.prod(e["s"])
    values = _cabac_decode(pieces[0], count, f"indices of {e['n']!r}")
    levels = torch.from_numpy(values).to(_dtype_from_name(e["d"])).reshape(e["s"])
    try:
        step = float.fromhex(e["step"])
    except ValueError as err:
        raise BitstreamError(f"malformed step of {e['n']!r}: {e['step']!r}") from err
    return QuantizedLayer(levels=levels, step=step, bits=e["bits"])


def _decode_float(e: dict[str, Any], pieces: list[bytes]) -> Tensor:
    dtype, count, what = _dtype_from_name(e["d"]), math.prod(e["s"]), f"values of {e['n']!r}"
    if e["k"] == "raw":
        return _from_raw(pieces[0], dtype, count, what).reshape(e["s"])
    mask = torch.from_numpy(_cabac_decode(pieces[0], count, f"mask of {e['n']!r}")) != 0
    out = torch.zeros(count, dtype=dtype)
    out[mask] = _from_raw(pieces[1], dtype, int(mask.sum()), what)
    return out.reshape(e["s"])


def decode(data: bytes) -> QuantizedModel:
    """Rebuild the model from :attr:`EncodedModel.bitstream`, bit-exactly (names, order, dtypes, shapes).

    Raises :class:`BitstreamError` naming the problem for a truncated, corrupted or foreign stream.
    """
    data = bytes(data)
    info = _read_side(data)
    start = HEADER_BYTES + _HEAD.unpack_from(data)[2]
    entries = info["quantized"] + info["float"]
    pieces = _split_payload(data, start, entries)
    nq = len(info["quantized"])
    quantized = {e["n"]: _decode_quantized(e, p) for e, p in zip(entries[:nq], pieces[:nq])}
    floats = {e["n"]: _decode_float(e, p) for e, p in zip(entries[nq:], pieces[nq:])}
    return QuantizedModel(quantized=quantized, float_params=floats, targets=list(info["targets"]))


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
