"""Strict checks of an ecqx container's side info, run before anything is allocated or decoded.

:mod:`ecqx.coding` hands :func:`read_side_info` the zlib-compressed side info; it gets back typed
:class:`Entry` records whose every field has been type-checked and every chunk length checked
against the entry's count and dtype and the limits below, or a :class:`BitstreamError` naming what
is wrong and where. What this allocates is bounded by the inflated JSON (:func:`inflate_limit`),
whose nesting is checked before the (recursive) parser sees it.

DeepCABAC limits (nncodec 2.1.3, ``BinDecoder.cpp`` / ``CABACDecoder.cpp``), used by the coder:

* Values per coded byte: every value costs at least one context-coded bin (its significance
  flag). A bin that does not renormalize shrinks the 9-bit range (256..510) by its LPS range,
  which is at least 2 (the minimum of ``rps_table``), so at most 128 bins pass per consumed bit:
  ``values <= 128 * 8 * bytes`` plus a few bins of the last run. Measured on all-zero layers, the
  most compressible input: 10**7 zeros code to 12 760 bytes, 784 values per byte (1 000 zeros:
  6 bytes). The bound :func:`cabac_max_values` = 1024 * bytes + 2048 therefore rejects no
  stream the decoder could accept whole, and has a 30 % margin over the measurement.
* Bytes read: the reader has no length bound; each bin reads at most one byte. Per value it
  decodes at most 43 context bins (significance, sign, 10 greater-than flags, 31 remainder
  flags) and one run of at most 31 bypass bins (at most 5 bytes): at most 48 bytes. The stream
  start reads 2 bytes plus 57 context-initialisation flags with up to 3 bypass bins each (at
  most 2 bytes per flag); termination reads at most 1: 117 bytes. :func:`cabac_read_bound` is
  the buffer the reader needs; a stream that ends early is read on into zeros, never beyond.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch

MAX_SIDE_INFO_BYTES = 16 * 2**20  # inflated side-info JSON (bytes); ~150 bytes per entry in practice
MAX_INFLATE_RATIO = 128  # inflated / compressed side-info bytes; real side infos: 2 to 34 (identical layers)
INFLATE_FLOOR_BYTES = 2**20  # below this the ratio is not enforced
MAX_ENTRIES = 65_536  # tensors per model (ResNet-50: 320), and names in the target list
MAX_JSON_DEPTH = 5  # root object > entry list > entry object > chunk list > [length, CRC32]
MAX_RANK = 8  # tensor dimensions
MAX_TENSOR_VALUES = 2**31 - 1  # elements per tensor: nncodec counts values in a C int
MAX_NAME_CHARS = 1024  # characters of a state-dict name
MAX_STEP_CHARS = 64  # characters of a step written by float.hex (at most 24)
MIN_BITS, MAX_BITS = 1, 32  # bit width of a quantized layer (levels are coded as int32)
CABAC_VALUES_PER_BYTE = 1024  # proven bound, see the module docstring (measured: 784)
CABAC_VALUES_SLACK = 2048  # values per chunk on top of CABAC_VALUES_PER_BYTE * bytes
CABAC_READ_BYTES_PER_VALUE = 48  # most bytes the reader can consume per value
CABAC_READ_BYTES_FIXED = 256  # most bytes it consumes for stream start and end (117), rounded up

INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
_OTHER_DTYPES = ("bool", "float16", "bfloat16", "float32", "float64", "complex32", "complex64", "complex128")
_FLOAT8 = ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu")
DTYPES = {n: getattr(torch, n) for n in INT_DTYPES + _OTHER_DTYPES + _FLOAT8 if hasattr(torch, n)}
_QUANTIZED_KEYS = frozenset({"n", "d", "s", "step", "bits", "c"})
_FLOAT_KEYS = frozenset({"n", "d", "s", "k", "c"})
_CHUNKS_PER_KIND = {"quantized": 1, "raw": 1, "sparse": 2}
# A JSON string literal; an unterminated one runs to the end, so that every match attempt succeeds
# and the scan stays linear (a failing attempt at each quote would be quadratic).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\(?:.|\Z)[^"\\]*)*(?:"|\Z)', re.DOTALL)
_EMPTY_PAIR = re.compile(rb"\[\]|\{\}")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class BitstreamError(ValueError):
    """A bitstream that is not a valid, complete, uncorrupted ecqx container."""


@dataclass(frozen=True)
class Entry:
    """One checked side-info entry.

    kind: "quantized" (DeepCABAC indices), "raw" (bytes of the dtype) or "sparse" (DeepCABAC
        non-zero mask, then the survivors' raw bytes).
    shape, count: the tensor's shape and its number of elements (``count = prod(shape)``).
    chunks: per payload chunk (length in bytes, CRC32), in payload order.
    step, bits: grid step (finite float) and bit width of a quantized layer, else None.
    """

    name: str
    kind: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    count: int
    chunks: tuple[tuple[int, int], ...]
    step: float | None = None
    bits: int | None = None


def cabac_max_values(chunk_bytes: int) -> int:
    """Most values a DeepCABAC chunk of ``chunk_bytes`` bytes can code (0 for an empty chunk)."""
    return CABAC_VALUES_PER_BYTE * chunk_bytes + CABAC_VALUES_SLACK if chunk_bytes else 0


def cabac_read_bound(count: int) -> int:
    """Most bytes the DeepCABAC reader can consume while decoding ``count`` values, whatever the input."""
    return CABAC_READ_BYTES_PER_VALUE * count + CABAC_READ_BYTES_FIXED


def _is_int(x: Any) -> bool:
    return type(x) is int  # not bool, not float


# ---------------------------------------------------------------- zlib and JSON


def inflate_limit(compressed_bytes: int) -> int:
    """Most bytes the side info may inflate to: MAX_SIDE_INFO_BYTES, and MAX_INFLATE_RATIO x its
    compressed size above INFLATE_FLOOR_BYTES (the JSON parser's objects take ~25x the text)."""
    return min(MAX_SIDE_INFO_BYTES, max(INFLATE_FLOOR_BYTES, MAX_INFLATE_RATIO * compressed_bytes))


def _inflate(side: bytes) -> bytes:
    """The side info's JSON bytes; never more than :func:`inflate_limit` bytes are inflated."""
    limit = inflate_limit(len(side))
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(side, limit + 1)
    except zlib.error as err:
        raise BitstreamError(f"malformed side info: {err}") from err
    if len(text) > limit:
        raise BitstreamError(f"side info inflates to more than {limit} bytes (the limit for {len(side)} bytes)")
    if not inflater.eof or inflater.unused_data:
        raise BitstreamError("malformed side info: the zlib stream is incomplete or followed by extra bytes")
    return text


def _check_depth(text: bytes) -> None:
    """Refuse JSON nested deeper than MAX_JSON_DEPTH, before the (recursive) json parser sees it."""
    brackets = _JSON_STRING.sub(b"", text).translate(None, _NOT_BRACKETS)
    # Each pass deletes the innermost bracket pairs, one nesting level: a document of depth d is
    # empty after d passes; anything left after MAX_JSON_DEPTH passes is deeper (or unbalanced).
    for _ in range(MAX_JSON_DEPTH):
        brackets = _EMPTY_PAIR.sub(b"", brackets)
    if brackets:
        raise BitstreamError(f"malformed side info: JSON nested deeper than {MAX_JSON_DEPTH} or unbalanced")


def _reject_constant(name: str) -> None:
    raise BitstreamError(f"malformed side info: {name} is not a valid JSON value here")


def _parse_json(text: bytes) -> Any:
    _check_depth(text)
    try:
        return json.loads(text.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError and over-long int literals
        if isinstance(err, BitstreamError):
            raise
        raise BitstreamError(f"malformed side info: {err}") from err


# ---------------------------------------------------------------- schema


def _where(e: Any, i: int, section: str) -> str:
    name = e.get("n") if isinstance(e, dict) else None
    return f"side-info entry {i} of {section!r}" + (f" ({name[:80]!r})" if isinstance(name, str) else "")


def _check_shape(shape: Any, where: str) -> tuple[tuple[int, ...], int]:
    """The shape as a tuple and its element count, both bounded by MAX_RANK / MAX_TENSOR_VALUES."""
    if not isinstance(shape, list) or len(shape) > MAX_RANK:
        raise BitstreamError(f"{where}: shape must be a list of at most {MAX_RANK} dimensions, got {str(shape)[:80]}")
    if not all(_is_int(d) and 0 <= d <= MAX_TENSOR_VALUES for d in shape):
        raise BitstreamError(f"{where}: dimensions must be integers in 0..{MAX_TENSOR_VALUES}, got {shape}")
    # The product of the non-zero dimensions bounds torch's strides even for an empty tensor.
    if math.prod(max(d, 1) for d in shape) > MAX_TENSOR_VALUES:
        raise BitstreamError(f"{where}: shape {shape} has more than {MAX_TENSOR_VALUES} elements")
    return tuple(shape), math.prod(shape)


def _check_chunks(refs: Any, kind: str, where: str) -> tuple[tuple[int, int], ...]:
    want = _CHUNKS_PER_KIND[kind]
    if not isinstance(refs, list) or len(refs) != want:
        raise BitstreamError(f"{where}: expected {want} chunk reference(s), got {str(refs)[:80]}")
    for ref in refs:
        ok = isinstance(ref, list) and len(ref) == 2 and all(_is_int(x) for x in ref)
        if not (ok and ref[0] >= 0 and 0 <= ref[1] < 2**32):
            raise BitstreamError(f"{where}: chunk reference must be [length >= 0, CRC32], got {str(ref)[:80]}")
    return tuple((length, crc) for length, crc in refs)


def check_cabac_count(count: int, length: int, what: str) -> None:
    """Refuse ``count`` values for a DeepCABAC chunk of ``length`` bytes unless the coder could produce it."""
    if count == 0 and length:
        raise BitstreamError(f"{what}: {length} payload bytes for an empty tensor")
    if count and not length:
        raise BitstreamError(f"{what}: empty payload for {count} values")
    if count > cabac_max_values(length):
        raise BitstreamError(f"{what}: {count} values cannot be coded in {length} DeepCABAC bytes (implausible)")


def _check_sizes(entry: Entry, where: str) -> None:
    """Every chunk length against the entry's count and dtype."""
    size = entry.dtype.itemsize
    first = entry.chunks[0][0]
    if entry.kind == "raw" and first != entry.count * size:
        raise BitstreamError(f"{where}: {first} raw bytes, expected {entry.count} x {size} for {entry.dtype}")
    if entry.kind != "raw":
        check_cabac_count(entry.count, first, where)
    if entry.kind == "sparse":
        survivors = entry.chunks[1][0]
        if survivors % size or survivors > entry.count * size:
            raise BitstreamError(f"{where}: {survivors} survivor bytes do not fit {entry.count} x {size}-byte values")


def _check_step(step: Any, where: str) -> float:
    if not isinstance(step, str) or len(step) > MAX_STEP_CHARS:
        raise BitstreamError(f"{where}: step must be a float.hex string, got {str(step)[:80]}")
    try:
        value = float.fromhex(step)
    except (ValueError, OverflowError) as err:
        raise BitstreamError(f"{where}: malformed step {step!r}") from err
    if not math.isfinite(value):
        raise BitstreamError(f"{where}: step {step!r} is not finite")
    return value


def _check_kind_and_dtype(e: dict[str, Any], section: str, where: str) -> tuple[str, torch.dtype]:
    kind = "quantized" if section == "quantized" else e["k"]
    if section == "float" and kind not in ("raw", "sparse"):
        raise BitstreamError(f"{where}: unknown kind {str(kind)[:40]!r} (expected 'raw' or 'sparse')")
    allowed = INT_DTYPES if kind == "quantized" else DTYPES
    name = e["d"]
    if not isinstance(name, str) or name not in allowed or name not in DTYPES:
        raise BitstreamError(f"{where}: dtype {str(name)[:40]!r} is not allowed here")
    dtype = DTYPES[name]
    if kind == "sparse" and not (dtype.is_floating_point and dtype.itemsize in (1, 2, 4, 8)):
        raise BitstreamError(f"{where}: a sparse entry needs a floating-point dtype, got {name}")
    return kind, dtype


def _check_bits(bits: Any, where: str) -> int:
    if not _is_int(bits) or not MIN_BITS <= bits <= MAX_BITS:
        raise BitstreamError(f"{where}: bits must be an integer in {MIN_BITS}..{MAX_BITS}, got {str(bits)[:40]}")
    return bits


def _check_entry(e: Any, section: str, i: int) -> Entry:
    where = _where(e, i, section)
    keys = _QUANTIZED_KEYS if section == "quantized" else _FLOAT_KEYS
    if not isinstance(e, dict) or set(e) != keys:
        got = sorted(e) if isinstance(e, dict) else type(e).__name__
        raise BitstreamError(f"{where}: expected an object with keys {sorted(keys)}, got {str(got)[:200]}")
    name = e["n"]
    if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
        raise BitstreamError(f"{where}: name must be a string of at most {MAX_NAME_CHARS} characters")
    kind, dtype = _check_kind_and_dtype(e, section, where)
    shape, count = _check_shape(e["s"], where)
    chunks = _check_chunks(e["c"], kind, where)
    step = _check_step(e["step"], where) if kind == "quantized" else None
    bits = _check_bits(e["bits"], where) if kind == "quantized" else None
    entry = Entry(name, kind, dtype, shape, count, chunks, step, bits)
    _check_sizes(entry, where)
    return entry


def _check_root(info: Any) -> None:
    if not isinstance(info, dict) or set(info) != {"targets", "quantized", "float"}:
        raise BitstreamError("malformed side info: expected an object with keys 'targets', 'quantized', 'float'")
    if not all(isinstance(info[k], list) for k in info):
        raise BitstreamError("malformed side info: expected lists 'targets', 'quantized', 'float'")
    sizes = len(info["quantized"]) + len(info["float"]), len(info["targets"])
    if max(sizes) > MAX_ENTRIES:
        raise BitstreamError(f"malformed side info: {sizes[0]} entries and {sizes[1]} targets, limit {MAX_ENTRIES}")


def read_side_info(side: bytes) -> tuple[list[Entry], int, list[str]]:
    """Inflate, parse and check the side info: (entries in payload order, number of quantized, targets)."""
    info = _parse_json(_inflate(side))
    _check_root(info)
    entries = [_check_entry(e, "quantized", i) for i, e in enumerate(info["quantized"])]
    entries += [_check_entry(e, "float", i) for i, e in enumerate(info["float"])]
    twice = sorted(n for n, k in Counter(e.name for e in entries).items() if k > 1)
    if twice:
        raise BitstreamError(f"malformed side info: duplicated entry names {str(twice)[:200]}")
    targets, known = info["targets"], {e.name for e in entries}
    unknown = [t for t in targets if not isinstance(t, str) or t not in known]
    if unknown:
        raise BitstreamError(f"malformed side info: targets that name no entry: {str(unknown)[:200]}")
    return entries, len(info["quantized"]), targets
