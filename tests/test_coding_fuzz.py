"""Fuzzing the decoder: any input, CRCs valid or not, gives a model or a BitstreamError, nothing else.

Mutations recompute the CRCs so that they reach the side-info parser and the CABAC reader. The
crafted inputs that used to crash, over-allocate or hang run in a child process under an
address-space limit, so a segfault or a runaway allocation fails the test instead of killing pytest.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import random
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ecqx.bitstream_checks import MAX_ENTRIES, MAX_SIDE_INFO_BYTES, MAX_TENSOR_VALUES, cabac_max_values
from ecqx.coding import HEADER_BYTES, BitstreamError, _cabac_encode, decode, encode
from ecqx.quantized import QuantizedLayer, QuantizedModel

REPO = Path(__file__).resolve().parents[1]
_HEAD = struct.Struct("<4sBII")
FAST_CASES = 5000
SLOW_CASES = 50_000
CHILD_EXTRA_ADDRESS_SPACE = 2 * 2**30  # bytes the crafted cases may map on top of the imports


# ---------------------------------------------------------------- models and container surgery


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _levels(shape, bits: int, seed: int) -> torch.Tensor:
    g = _gen(seed)
    levels = torch.randint(-(2 ** (bits - 1)), 2 ** (bits - 1), shape, generator=g, dtype=torch.int32)
    return torch.where(torch.rand(shape, generator=g) < 0.6, torch.zeros_like(levels), levels)


def _models() -> dict[str, QuantizedModel]:
    """Small models covering every entry kind: quantized, raw (several dtypes) and sparse."""
    pruned = torch.randn(6, 6, generator=_gen(1))
    pruned[pruned.abs() < 0.8] = 0.0
    mixed = QuantizedModel(
        {"conv.weight": QuantizedLayer(_levels((4, 3, 3, 3), 4, 0), 0.0123, 4)},
        {
            "conv.bias": torch.randn(4, generator=_gen(2)),
            "bn.num_batches_tracked": torch.tensor(7, dtype=torch.int64),
            "flag": torch.tensor([True, False, True]),
            "half.weight": torch.randn(2, 3, generator=_gen(3)).half(),
            "fc.weight": pruned,
        },
        targets=["conv.weight", "fc.weight"],
    )
    edge = QuantizedModel(
        {
            "zeros": QuantizedLayer(torch.zeros(5, 7, dtype=torch.int32), 0.5, 2),
            "empty": QuantizedLayer(torch.zeros(0, 3, dtype=torch.int32), 0.1, 2),
            "bytes": QuantizedLayer(torch.tensor([0, 3, 200], dtype=torch.uint8), 2.0**-7, 8),
            "fc.weight": QuantizedLayer(_levels((5, 8), 3, 4), 1 / 3, 3),
        },
        {"bf": torch.tensor([0.0, 1.5, 0.0, -2.0]).bfloat16(), "c": torch.tensor([1 + 2j, 0j])},
        targets=["zeros", "fc.weight", "bf"],
    )
    return {"mixed": mixed, "edge": edge}


def split(stream: bytes) -> tuple[dict[str, Any], bytes]:
    """A valid container's side-info dict and payload."""
    side_len = _HEAD.unpack_from(stream)[2]
    info = json.loads(zlib.decompress(stream[HEADER_BYTES : HEADER_BYTES + side_len]))
    return info, stream[HEADER_BYTES + side_len :]


def container(side: bytes, payload: bytes, version: int = 1, side_len: int | None = None) -> bytes:
    """Header (both CRCs correct) + ``side`` (already compressed) + ``payload``."""
    head = _HEAD.pack(b"ECQX", version, len(side) if side_len is None else side_len, zlib.crc32(side))
    return head + struct.pack("<I", zlib.crc32(head)) + side + payload


def _refs(info: Any):
    """Every well-formed [length, CRC32] reference, in payload order."""
    if not isinstance(info, dict):
        return
    for section in ("quantized", "float"):
        for e in info.get(section, []) if isinstance(info.get(section), list) else []:
            refs = e.get("c") if isinstance(e, dict) else None
            for ref in refs if isinstance(refs, list) else []:
                if isinstance(ref, list) and len(ref) == 2 and all(type(x) is int for x in ref):
                    if ref[0] >= 0 and 0 <= ref[1] < 2**32:  # else deliberately malformed: left alone
                        yield ref


def rebuild(info: Any, payload: bytes, text: bytes | None = None) -> bytes:
    """A container for ``info`` and ``payload`` with every CRC (header, side info, chunks) made to match."""
    pos = 0
    for ref in _refs(info):
        ref[1] = zlib.crc32(payload[pos : pos + ref[0]])
        pos += ref[0]
    if text is None:
        text = json.dumps(info, separators=(",", ":")).encode()
    return container(zlib.compress(text, 9), payload)


def outcome(data: bytes) -> str:
    """'model' or 'BitstreamError'; any other exception propagates and fails the test."""
    try:
        decode(data)
    except BitstreamError:
        return "BitstreamError"
    return "model"


# ---------------------------------------------------------------- random mutations

_ODD_VALUES = [
    0, 1, -1, 2, 7, 33, 2**31 - 1, 2**31, 2**32, 2**63, -(2**63), 2**64, 1.5, 1e308, -0.0, True, False, None,
    "", "x", "x" * 3000, "float32", "int8", "uint64", "bool", "qint8", "float", "raw", "sparse", "0x1p+0", "nan",
    "inf", "0x1p99999", [], [0], [2**31], [-1], [1, 2, 3], [[1, 2]], {}, {"n": 1}, [[0, 0], [0, 0]],
]  # fmt: skip


def _odd_shape(rng: random.Random) -> list[Any]:
    dims = [0, 1, 2, 3, 5, 64, 2**16, 2**31 - 1, 2**31, -1, 2**40]
    return [rng.choice(dims) for _ in range(rng.choice([0, 1, 2, 3, 4, 9]))]


def _entries(info: dict[str, Any]) -> list[dict[str, Any]]:
    return info["quantized"] + info["float"]


def _chunks(info: dict[str, Any], payload: bytes) -> tuple[list[list[int]], list[bytes]]:
    """The [length, CRC32] references of a valid side info and the payload cut into those chunks."""
    refs = [ref for e in _entries(info) for ref in e["c"]]
    bounds = np.cumsum([0] + [ref[0] for ref in refs]).tolist()
    return refs, [payload[bounds[i] : bounds[i + 1]] for i in range(len(refs))]


def _mutate_field(rng: random.Random, info: dict[str, Any], payload: bytes) -> bytes:
    e = rng.choice(_entries(info))
    key = rng.choice(sorted(e))
    if key == "s" and rng.random() < 0.6:
        e["s"] = _odd_shape(rng)
    elif key == "c" and rng.random() < 0.6:  # move bytes between chunks: totals stay, counts mismatch
        refs = [ref for x in _entries(info) for ref in x["c"]]
        a, b = rng.sample(range(len(refs)), 2) if len(refs) > 1 else (0, 0)
        moved = rng.randint(0, refs[a][0])
        refs[a][0] -= moved
        refs[b][0] += moved
    else:
        e[key] = copy.deepcopy(rng.choice(_ODD_VALUES))
    return rebuild(info, payload)


def _mutate_structure(rng: random.Random, info: dict[str, Any], payload: bytes) -> bytes:
    choice = rng.randrange(6)
    section = rng.choice(["quantized", "float"])
    if choice == 0 and info[section]:
        del rng.choice(info[section])[rng.choice(["n", "d", "s", "c"])]
    elif choice == 1 and info[section]:
        rng.choice(info[section])[rng.choice(["extra", "k", "bits", "step"])] = 1
    elif choice == 2 and info[section]:  # the same entry twice; its chunks twice in the payload
        info[section].append(copy.deepcopy(info[section][-1]))
        payload += payload[len(payload) - sum(r[0] for r in info[section][-1]["c"]) :] if section == "float" else b""
    elif choice == 3:
        info["quantized"], info["float"] = info["float"], info["quantized"]
    elif choice == 4:
        info["targets"] = rng.choice([["nope"], [5], info["targets"] * 2, [], None, "x"])
    else:
        info[rng.choice(["targets", "quantized", "float", "extra"])] = copy.deepcopy(rng.choice(_ODD_VALUES))
    return rebuild(info, payload)


def _mutate_bytes(rng: random.Random, blob: bytes, n: int) -> bytes:
    out = bytearray(blob)
    for _ in range(n):
        if not out:
            break
        i, op = rng.randrange(len(out)), rng.randrange(4)
        if op == 0:
            out[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[i] = rng.choice([0, 0xFF, 0x80, rng.randrange(256)])
        elif op == 2:
            del out[i]
        else:
            out.insert(i, rng.randrange(256))
    return bytes(out)


def mutate(rng: random.Random, stream: bytes) -> bytes:
    """One random mutation of a valid stream, with the CRCs recomputed wherever possible."""
    info, payload = split(stream)
    strategy = rng.randrange(6)
    if strategy == 0:  # bytes of the JSON text
        text = _mutate_bytes(rng, json.dumps(info, separators=(",", ":")).encode(), rng.randint(1, 4))
        try:
            parsed = json.loads(text)
        except ValueError:
            return container(zlib.compress(text), payload)
        return rebuild(parsed, payload) if isinstance(parsed, dict) else container(zlib.compress(text), payload)
    if strategy == 1:  # payload bytes, chunk lengths kept, chunk CRCs fixed
        mutated = _mutate_bytes(rng, payload, rng.randint(1, 8))
        return rebuild(info, mutated[: len(payload)].ljust(len(payload), b"\0"))
    if strategy == 2:  # one chunk's bytes and declared length, CRCs fixed
        refs, chunks = _chunks(info, payload)
        k = rng.randrange(len(refs))
        chunks[k] = _mutate_bytes(rng, chunks[k], rng.randint(1, 4))
        refs[k][0] = len(chunks[k])
        return rebuild(info, b"".join(chunks))
    if strategy == 3:
        return _mutate_field(rng, info, payload)
    if strategy == 4:
        return _mutate_structure(rng, info, payload)
    return _mutate_bytes(rng, stream, rng.randint(1, 6))  # raw bytes: CRCs mostly fail


@pytest.fixture(scope="module")
def streams() -> dict[str, bytes]:
    return {name: encode(qm).bitstream for name, qm in _models().items()}


def _fuzz(streams: dict[str, bytes], cases: int, seed: int) -> Counter:
    rng = random.Random(seed)
    names = sorted(streams)
    results: Counter = Counter()
    for i in range(cases):
        data = mutate(rng, streams[names[i % len(names)]])
        try:
            results[outcome(data)] += 1
        except Exception as err:  # report the input that escaped
            pytest.fail(f"case {i} (seed {seed}): {type(err).__name__}: {err}; input {data[:200]!r}...")
    return results


def test_valid_streams_decode(streams):
    assert all(outcome(s) == "model" for s in streams.values())


def test_random_mutations_with_valid_crcs_give_a_model_or_a_bitstream_error(streams):
    start = time.perf_counter()
    results = _fuzz(streams, FAST_CASES, seed=20240601)
    assert sum(results.values()) == FAST_CASES and results["BitstreamError"] > FAST_CASES / 2
    assert time.perf_counter() - start < 120  # ~1 s here: a hang shows, a slow machine does not flake


@pytest.mark.slow
def test_many_random_mutations(streams):
    results = _fuzz(streams, SLOW_CASES, seed=7)
    assert sum(results.values()) == SLOW_CASES


def test_every_truncation_is_a_bitstream_error(streams):
    data = streams["mixed"]
    for keep in range(len(data)):
        with pytest.raises(BitstreamError):
            decode(data[:keep])


# ---------------------------------------------------------------- crafted inputs, in a child process


def _entry(info: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in _entries(info) if e["n"] == name)


def _with(stream: bytes, edit) -> bytes:
    """``stream`` with ``edit(info)`` applied to its side info, CRCs fixed."""
    info, payload = split(stream)
    edit(info)
    return rebuild(info, payload)


def _set(name: str, key: str, value: Any):
    return lambda info: _entry(info, name).__setitem__(key, value)


def _side(text: bytes, payload: bytes = b"") -> bytes:
    return container(zlib.compress(text, 9), payload)


def _many_entries(n: int) -> bytes:
    entries = ",".join(f'{{"n":"{i:x}","d":"bool","s":[0],"k":"raw","c":[[0,0]]}}' for i in range(n))
    return f'{{"targets":[],"quantized":[],"float":[{entries}]}}'.encode()


def _zlib_bomb(size: int) -> bytes:
    deflater, block = zlib.compressobj(9), bytes(2**20)
    return b"".join(deflater.compress(block) for _ in range(size // len(block))) + deflater.flush()


def _one_layer(levels: list[int], dtype: str, chunk: bytes | None = None, count: int | None = None) -> bytes:
    """A one-layer stream whose DeepCABAC chunk codes ``levels`` (or is ``chunk``), declared as ``dtype``."""
    chunk = _cabac_encode(np.array(levels, np.int32)) if chunk is None else chunk
    entry = {"n": "w", "d": dtype, "s": [len(levels) if count is None else count], "step": "0x1p-1", "bits": 8}
    info = {"targets": ["w"], "quantized": [entry | {"c": [[len(chunk), 0]]}], "float": []}
    return rebuild(info, chunk)


def _moved_bytes(stream: bytes, src: str, dst: str, n: int, src_chunk: int = 0) -> bytes:
    """Move ``n`` bytes of declared length from a chunk of entry ``src`` to ``dst``'s first (total unchanged)."""

    def edit(info):
        _entry(info, src)["c"][src_chunk][0] -= n
        _entry(info, dst)["c"][0][0] += n

    return _with(stream, edit)


def _swapped_streams(stream: bytes, a: str, b: str) -> bytes:
    """The first (DeepCABAC) chunks of entries ``a`` and ``b`` swapped in the payload, lengths and CRCs fixed."""
    info, payload = split(stream)
    refs, chunks = _chunks(info, payload)
    ia, ib = (refs.index(_entry(info, name)["c"][0]) for name in (a, b))
    chunks[ia], chunks[ib] = chunks[ib], chunks[ia]
    refs[ia][0], refs[ib][0] = len(chunks[ia]), len(chunks[ib])
    return rebuild(info, b"".join(chunks))


def _crafted(streams: dict[str, bytes]) -> dict[str, tuple[bytes, str]]:
    """name -> (input, a substring the BitstreamError message must contain)."""
    m, e = streams["mixed"], streams["edge"]
    random_chunk = bytes(random.Random(1).randrange(256) for _ in range(32))
    zeros_chunk = _cabac_encode(np.zeros(1000, np.int32))
    deep_shape: Any = [1]
    for _ in range(300):  # json.dumps itself recurses
        deep_shape = [deep_shape]
    empty = b'{"targets":[],"quantized":[],"float":[]}'
    rng = random.Random(2)
    escapes = b"".join(b'\\"' + bytes([rng.randrange(97, 123)]) for _ in range(600_000))  # quadratic for naive regexes
    return {
        # sizes and counts that decide allocations, or what the CABAC reader is given
        "count_50M_tiny_chunk": (_with(m, _set("conv.weight", "s", [50_000_000])), "implausible"),
        "mask_count_50M_tiny_chunk": (_with(m, _set("fc.weight", "s", [50_000_000])), "implausible"),
        "raw_4TiB": (_with(m, _set("conv.bias", "s", [2**20, 2**20])), "elements"),
        "raw_count_at_global_limit": (_with(m, _set("conv.bias", "s", [MAX_TENSOR_VALUES])), "raw bytes, expected"),
        "count_above_global_limit": (_with(m, _set("conv.weight", "s", [MAX_TENSOR_VALUES + 1])), "dimensions"),
        "count_at_bound_random_chunk": (_one_layer([], "int32", random_chunk, cabac_max_values(32)), "DeepCABAC"),
        "count_at_bound_zero_stream": (_one_layer([], "int32", zeros_chunk, cabac_max_values(6)), "DeepCABAC"),
        "count_one_too_many": (_one_layer([], "int32", zeros_chunk, 1001), "DeepCABAC"),
        "count_one_too_few": (_one_layer([], "int32", zeros_chunk, 999), "DeepCABAC"),
        "mask_stream_as_levels": (_swapped_streams(m, "conv.weight", "fc.weight"), "DeepCABAC"),
        "negative_dim": (_with(m, _set("conv.weight", "s", [-1, 108])), "dimensions"),
        "dim_2**64": (_with(m, _set("conv.bias", "s", [2**64])), "dimensions"),
        "float_dim": (_with(m, _set("conv.bias", "s", [4.0])), "dimensions"),
        "bool_dim": (_with(m, _set("conv.bias", "s", [True, True, True, True])), "dimensions"),
        "rank_9": (_with(m, _set("conv.bias", "s", [1] * 8 + [4])), "at most 8"),
        "empty_with_huge_strides": (_with(e, _set("empty", "s", [0, 2**31 - 1, 2**31 - 1])), "elements"),
        "shape_string": (_with(m, _set("conv.bias", "s", "4")), "shape must be a list"),
        "raw_length_mismatch": (_moved_bytes(m, "conv.bias", "bn.num_batches_tracked", 1), "raw bytes, expected"),
        "cabac_bytes_for_empty_tensor": (_moved_bytes(e, "zeros", "empty", 1), "empty tensor"),
        "cabac_no_bytes_for_values": (_moved_bytes(e, "zeros", "bf", _entry(split(e)[0], "zeros")["c"][0][0]), "empty"),
        "survivor_bytes_not_whole_values": (_moved_bytes(m, "fc.weight", "fc.weight", 1, src_chunk=1), "survivor"),
        "more_survivors_than_values": (_with(m, _set("fc.weight", "s", [1])), "survivor bytes"),
        "survivors_not_matching_mask": (_sparse_mask([1, 0, 1], survivors=1), "4 bytes, expected 2 x 4"),
        "chunk_beyond_payload": (_with(m, lambda i: _entry(i, "conv.weight")["c"][0].__setitem__(0, 2**40)), "trunc"),
        "chunk_length_negative": (_with(m, lambda i: _entry(i, "flag")["c"].__setitem__(0, [-1, 0])), "chunk ref"),
        "chunk_crc_2**33": (_with(m, lambda i: _entry(i, "flag")["c"].__setitem__(0, [3, 2**33])), "CRC32"),
        "chunk_ref_of_three": (_with(m, lambda i: _entry(i, "flag")["c"][0].append(0)), "chunk reference"),
        "no_chunk_refs": (_with(m, _set("flag", "c", [])), "chunk reference"),
        # dtypes, kinds, steps, bits, names
        "dtype_float128": (_with(m, _set("conv.bias", "d", "float128")), "not allowed"),
        "dtype_qint8": (_with(m, _set("conv.bias", "d", "qint8")), "not allowed"),
        "dtype_alias_float": (_with(m, _set("conv.bias", "d", "float")), "not allowed"),
        "dtype_dunder": (_with(m, _set("conv.bias", "d", "__class__")), "not allowed"),
        "dtype_number": (_with(m, _set("conv.bias", "d", 5)), "not allowed"),
        "quantized_float_dtype": (_with(m, _set("conv.weight", "d", "float32")), "not allowed"),
        "sparse_int_dtype": (_with(m, _set("fc.weight", "d", "int32")), "floating-point"),
        "kind_unknown": (_with(m, _set("conv.bias", "k", "zip")), "unknown kind"),
        "kind_list": (_with(m, _set("conv.bias", "k", ["raw"])), "unknown kind"),
        "kind_quantized_in_float": (_with(m, _set("conv.bias", "k", "quantized")), "unknown kind"),
        "step_nan": (_with(m, _set("conv.weight", "step", "nan")), "not finite"),
        "step_inf": (_with(m, _set("conv.weight", "step", "-inf")), "not finite"),
        "step_overflow": (_with(m, _set("conv.weight", "step", "0x1p99999")), "malformed step"),
        "step_garbage": (_with(m, _set("conv.weight", "step", "zz")), "malformed step"),
        "step_number": (_with(m, _set("conv.weight", "step", 0.5)), "float.hex"),
        "step_too_long": (_with(m, _set("conv.weight", "step", "0x1." + "0" * 100 + "p0")), "float.hex"),
        "bits_0": (_with(m, _set("conv.weight", "bits", 0)), "bits must be"),
        "bits_33": (_with(m, _set("conv.weight", "bits", 33)), "bits must be"),
        "bits_2**70": (_with(m, _set("conv.weight", "bits", 2**70)), "bits must be"),
        "bits_true": (_with(m, _set("conv.weight", "bits", True)), "bits must be"),
        "bits_string": (_with(m, _set("conv.weight", "bits", "4")), "bits must be"),
        "name_number": (_with(m, _set("conv.bias", "n", 5)), "name must be"),
        "name_too_long": (_with(m, _set("conv.bias", "n", "x" * 5000)), "name must be"),
        "duplicated_name": (_with(m, _set("conv.bias", "n", "conv.weight")), "duplicated entry names"),
        "target_unknown": (_with(m, lambda i: i.__setitem__("targets", ["nope"])), "targets"),
        "target_number": (_with(m, lambda i: i.__setitem__("targets", [5])), "targets"),
        "missing_key": (_with(m, lambda i: _entry(i, "conv.weight").pop("bits")), "expected an object with keys"),
        "extra_key": (_with(m, _set("conv.bias", "step", "0x1p+0")), "expected an object with keys"),
        "entry_not_object": (_with(m, lambda i: i["float"].insert(0, 5)), "expected an object"),
        # decoded values that do not fit
        "levels_outside_int8": (_one_layer([0, 1000, 1], "int8"), "outside the range"),
        "negative_uint8_level": (_one_layer([0, -1], "uint8"), "outside the range"),
        "mask_value_2": (_sparse_mask([0, 2, 1]), "other than 0 and 1"),
        "bool_byte_2": (_bool_raw(b"\x01\x02"), "bool bytes"),
        # the side info as a whole: zlib, JSON, nesting
        "zlib_bomb_400MB": (container(_zlib_bomb(400 * 2**20), b""), f"more than {MAX_SIDE_INFO_BYTES}"),
        "json_padded_past_limit": (_side(empty[:-1] + b" " * (MAX_SIDE_INFO_BYTES + 1) + b"}"), "more than"),
        "json_4M_empty_objects": (_side(empty[:-2] + b"{}," * 4_000_000 + b"{}]}"), "inflates to more than"),
        "too_many_entries": (_side(_many_entries(MAX_ENTRIES + 1)), f"limit {MAX_ENTRIES}"),
        "unterminated_string_of_escapes": (_side(b'{"targets":["' + escapes), "unbalanced"),
        "deep_array_100k": (_side(b"[" * 100_000 + b"]" * 100_000), "nested deeper"),
        "deep_object_50k": (_side(b'{"a":' * 50_000 + b"1" + b"}" * 50_000), "nested deeper"),
        "deep_shape_300": (_with(m, _set("conv.bias", "s", deep_shape)), "nested deeper"),
        "brackets_in_names_ok": (_with(m, _set("conv.bias", "n", "[[[[[[{{{{{{")), ""),
        "unbalanced_json": (_side(empty + b"]"), "unbalanced"),
        "json_nan": (_side(empty.replace(b"[]}", b"[NaN]}")), "NaN"),
        "json_infinity": (_side(empty.replace(b"[]}", b"[-Infinity]}")), "Infinity"),
        "json_5000_digit_int": (_side(empty.replace(b"[]}", b"[" + b"9" * 5000 + b"]}")), "malformed side info"),
        "json_list_root": (_side(b"[]"), "expected an object"),
        "json_null_root": (_side(b"null"), "expected an object"),
        "json_extra_root_key": (_side(empty[:-1] + b',"x":1}'), "expected an object"),
        "json_section_not_list": (_side(empty.replace(b'"float":[]', b'"float":{}')), "expected lists"),
        "not_utf8": (_side(b'{"targets":["\xff\xfe"],"quantized":[],"float":[]}'), "malformed side info"),
        "not_zlib": (container(b"hello, world", b""), "malformed side info"),
        "zlib_trailing_bytes": (container(zlib.compress(empty) + b"junk", b""), "followed by extra bytes"),
        "zlib_truncated": (container(zlib.compress(empty)[:-5], b""), "incomplete"),
        "empty_side_info": (container(b"", b""), "incomplete"),
        "trailing_payload": (container(zlib.compress(empty), b"x"), "trailing"),
        # the header
        "side_length_2**32-1": (container(zlib.compress(empty), b"", side_len=2**32 - 1), "truncated"),
        "version_2": (container(zlib.compress(empty), b"", version=2), "unsupported format version"),
    }


def _sparse_mask(flags: list[int], survivors: int | None = None) -> bytes:
    """A one-entry sparse float32 stream: mask ``flags``, one survivor per non-zero flag unless told."""
    chunk = _cabac_encode(np.array(flags, np.int32))
    n = sum(f != 0 for f in flags) if survivors is None else survivors
    survivors = np.ones(n, np.float32).tobytes()
    entry = {"n": "f", "d": "float32", "s": [len(flags)], "k": "sparse", "c": [[len(chunk), 0], [len(survivors), 0]]}
    return rebuild({"targets": ["f"], "quantized": [], "float": [entry]}, chunk + survivors)


def _bool_raw(raw: bytes) -> bytes:
    entry = {"n": "b", "d": "bool", "s": [len(raw)], "k": "raw", "c": [[len(raw), 0]]}
    return rebuild({"targets": [], "quantized": [], "float": [entry]}, raw)


# Decodes every case under an address-space limit (what the imports use + 2 GiB); prints one
# JSON line per case. nncodec's own stdout chatter is told apart by the prefix.
_CHILD = """
import json, pickle, resource, sys
import ecqx.coding as coding
coding._deepcabac()
vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + int(sys.argv[2]), resource.RLIM_INFINITY))
for name, data in pickle.load(open(sys.argv[1], "rb")).items():
    try:
        coding.decode(data)
        result = ["model", ""]
    except coding.BitstreamError as err:
        result = ["BitstreamError", str(err)]
    except BaseException as err:
        result = [type(err).__name__, str(err)[:500]]
    print("RESULT " + json.dumps([name] + result), flush=True)
"""


def _run_child(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", script, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def crafted(streams) -> dict[str, tuple[bytes, str]]:
    return _crafted(streams)


@pytest.fixture(scope="module")
def crafted_results(crafted, tmp_path_factory) -> dict[str, list[str]]:
    path = tmp_path_factory.mktemp("crafted") / "cases.pkl"
    path.write_bytes(pickle.dumps({name: data for name, (data, _) in crafted.items()}))
    proc = _run_child(_CHILD, str(path), str(CHILD_EXTRA_ADDRESS_SPACE))
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            name, *result = json.loads(line.removeprefix("RESULT "))
            results[name] = result
    assert proc.returncode == 0, f"child died ({proc.returncode}) after {list(results)[-3:]}: {proc.stderr[-2000:]}"
    return results


def test_crafted_cases_run_in_a_child_that_does_not_crash(crafted, crafted_results):
    assert set(crafted_results) == set(crafted)


def test_every_crafted_case_is_a_bitstream_error_naming_the_problem(crafted, crafted_results):
    wrong = {}
    for name, (_, expected) in crafted.items():
        kind, message = crafted_results[name]
        ok_model = name == "brackets_in_names_ok" and kind == "model"
        if not ok_model and (kind != "BitstreamError" or expected.lower() not in message.lower()):
            wrong[name] = (kind, message[:300], f"expected {expected!r}")
    assert not wrong, json.dumps(wrong, indent=1)


# ---------------------------------------------------------------- the reader never leaves its buffer

# Replaces the zero padding by a buffer that ends exactly at a PROT_NONE page, then decodes random
# streams with every plausible count: a read past cabac_read_bound(count) would be a segfault.
_GUARD_CHILD = """
import ctypes, mmap, random, sys
import numpy as np
import ecqx.coding as coding
from ecqx.bitstream_checks import cabac_max_values
libc = ctypes.CDLL(None, use_errno=True)

def guarded(chunk, size, what):
    page = mmap.PAGESIZE
    total = -(-size // page) * page
    mapping = mmap.mmap(-1, total + page, flags=mmap.MAP_PRIVATE)
    whole = np.frombuffer(mapping, dtype=np.uint8)
    assert libc.mprotect(ctypes.c_void_p(whole.ctypes.data + total), page, 0) == 0  # PROT_NONE
    buf = whole[total - size : total]
    buf[: len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
    return mapping, buf

coding._padded = guarded
rng = random.Random(int(sys.argv[1]))
seen = {}
for i in range(int(sys.argv[2])):
    n = rng.choice([1, 2, 3, 8, 64])
    chunk = bytes(rng.choice([0, 0xFF, 0x80, rng.randrange(256)]) for _ in range(n))
    count = rng.choice([1, 2, 17, rng.randint(1, cabac_max_values(n)), cabac_max_values(n)])
    try:
        coding._cabac_decode(chunk, count, "x")
        seen["model"] = seen.get("model", 0) + 1
    except coding.BitstreamError:
        seen["BitstreamError"] = seen.get("BitstreamError", 0) + 1
print("RESULT", sum(seen.values()), flush=True)
"""


def test_cabac_reader_stays_inside_its_padded_buffer():
    proc = _run_child(_GUARD_CHILD, "3", "400")
    assert proc.returncode == 0, f"the CABAC reader left its buffer ({proc.returncode}): {proc.stderr[-2000:]}"
    assert "RESULT 400" in proc.stdout
