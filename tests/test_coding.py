"""The coded bitstream: exact round trips, size against the entropy bound, and clear errors."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from ecqx.bitstream_checks import CABAC_VALUES_PER_BYTE, cabac_max_values
from ecqx.coding import HEADER_BYTES, BitstreamError, EncodedModel, baseline_sizes, decode, encode
from ecqx.quantized import QuantizedLayer, QuantizedModel

# Fixed side-info allowance (bytes) for a one-layer model: 17-byte header plus the zlib JSON.
SIDE_OVERHEAD_BYTES = 256


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sparse_levels(shape, bits: int, zeros: float, seed: int, signed: bool = True) -> torch.Tensor:
    """int32 levels on a b-bit grid, a fraction ``zeros`` of them exactly 0."""
    g = _gen(seed)
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1)) if signed else (0, 2**bits)
    levels = torch.randint(low, high, shape, generator=g, dtype=torch.int32)
    return torch.where(torch.rand(shape, generator=g) < zeros, torch.zeros_like(levels), levels)


def _bits_of(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _assert_identical(a: QuantizedModel, b: QuantizedModel) -> None:
    assert b.targets == a.targets
    assert list(b.quantized) == list(a.quantized)
    for name, layer in a.quantized.items():
        got = b.quantized[name]
        assert got.levels.dtype == layer.levels.dtype and got.levels.shape == layer.levels.shape, name
        assert torch.equal(got.levels, layer.levels), name
        assert isinstance(got.step, float) and got.step == layer.step and got.bits == layer.bits, name
    assert list(b.float_params) == list(a.float_params)
    for name, t in a.float_params.items():
        got = b.float_params[name]
        assert got.dtype == t.dtype and got.shape == t.shape, name
        assert _bits_of(got) == _bits_of(t), name  # bit-identical, so -0.0 and NaN count too


def _round_trip(qm: QuantizedModel) -> EncodedModel:
    enc = encode(qm)
    _assert_identical(qm, decode(enc.bitstream))
    assert enc.total_bytes == len(enc.bitstream) == enc.weight_bytes + enc.float_bytes + enc.side_bytes
    return enc


def _small_model(bits: int, seed: int = 0) -> QuantizedModel:
    quantized = {
        "conv.weight": QuantizedLayer(_sparse_levels((8, 3, 3, 3), bits, 0.6, seed), 0.0123456789, bits),
        "fc.weight": QuantizedLayer(_sparse_levels((10, 32), bits, 0.8, seed + 1), 1 / 3, bits),
    }
    floats = {
        "conv.bias": torch.randn(8, generator=_gen(seed)),
        "bn.weight": torch.rand(8, generator=_gen(seed + 2)),
        "bn.running_var": torch.rand(8, generator=_gen(seed + 3)),
        "bn.num_batches_tracked": torch.tensor(1234, dtype=torch.int64),
        "half.weight": torch.randn(3, 4, generator=_gen(seed + 4)).half(),
        "flag": torch.tensor([True, False, True]),
        "fc.bias": torch.randn(10, generator=_gen(seed + 5), dtype=torch.float64),
    }
    return QuantizedModel(quantized, floats, targets=["conv.weight", "fc.weight"])


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
def test_round_trip_random_sparse_layers(bits):
    enc = _round_trip(_small_model(bits, seed=bits))
    assert enc.weight_bytes > 0 and enc.float_bytes > 0 and enc.side_bytes > HEADER_BYTES
    assert "nncodec" in enc.codec and enc.encode_seconds >= 0
    assert set(enc.layer_bytes) == {"conv.weight", "fc.weight", *_small_model(bits).float_params}


def test_round_trip_edge_layers():
    quantized = {
        "zeros": QuantizedLayer(torch.zeros(16, 8, 3, 3, dtype=torch.int32), 0.5, 4),
        "one_level": QuantizedLayer(torch.full((7, 5), -3, dtype=torch.int32), 0.25, 3),
        "unsigned": QuantizedLayer(_sparse_levels((32, 4, 3, 3), 8, 0.3, 7, signed=False), 2.0**-7, 8),
        "single": QuantizedLayer(torch.tensor([5], dtype=torch.int32), 1e-3, 4),
        "empty": QuantizedLayer(torch.zeros(0, 4, dtype=torch.int32), 0.1, 2),
        "scalar": QuantizedLayer(torch.tensor(-1, dtype=torch.int32), 0.1, 2),
        "wide": QuantizedLayer(torch.tensor([2**31 - 1, -(2**31 - 1), 0], dtype=torch.int32), 1e-9, 32),
    }
    _round_trip(QuantizedModel(quantized, {}, targets=list(quantized)))


def test_pruned_float_target_is_lossless_and_pays_only_for_survivors():
    g = _gen(3)
    w = torch.randn(256, 256, generator=g)
    w[torch.rand(w.shape, generator=g) < 0.9] = 0.0
    w[0, :3] = torch.tensor([-0.0, float("nan"), float("inf")])
    qm = QuantizedModel({}, {"fc.weight": w, "fc.bias": torch.zeros(256)}, targets=["fc.weight"])
    enc = _round_trip(qm)
    survivors = int((w != 0).sum()) + 1  # -0.0 is stored as a survivor to stay bit-exact
    assert enc.layer_bytes["fc.weight"] < 4 * survivors + w.numel() / 8  # mask well under 1 bit/weight
    assert enc.layer_bytes["fc.bias"] == 4 * 256  # not a target: raw float32


def test_round_trip_models_without_quantized_layers():
    _round_trip(QuantizedModel({}, {"w": torch.randn(4, 4)}, targets=[]))
    _round_trip(QuantizedModel({}, {}, targets=[]))


@pytest.fixture(scope="module")
def big_sparse_layer() -> QuantizedModel:
    levels = _sparse_levels((1000, 1000), 4, 0.9, seed=11)
    return QuantizedModel({"big.weight": QuantizedLayer(levels, 0.01, 4)}, {}, targets=["big.weight"])


def test_big_sparse_layer_is_coded_near_the_entropy_bound(big_sparse_layer):
    levels = big_sparse_layer.quantized["big.weight"].levels
    n = levels.numel()
    _, counts = torch.unique(levels, return_counts=True)
    entropy_bits = -sum((c / n) * math.log2(c / n) for c in counts.tolist())
    bound_bytes = n * entropy_bits / 8
    enc = _round_trip(big_sparse_layer)
    assert enc.weight_bytes <= 1.05 * bound_bytes
    assert enc.total_bytes <= 1.05 * bound_bytes + SIDE_OVERHEAD_BYTES


def test_baselines_are_positive_and_deepcabac_beats_zlib(big_sparse_layer):
    sizes = baseline_sizes(big_sparse_layer)
    assert all(sizes[k] > 0 for k in ("zlib_bytes", "lzma_bytes", "raw_bytes", "packed_bytes"))
    assert sizes["raw_bytes"] == 1_000_000 and sizes["packed_bytes"] == 500_000
    assert encode(big_sparse_layer).weight_bytes < sizes["zlib_bytes"]
    assert baseline_sizes(QuantizedModel({}, {}, []))["zlib_bytes"] > 0


def test_baselines_widen_to_int16_when_int8_does_not_fit():
    layer = QuantizedLayer(torch.tensor([0, 200, -3], dtype=torch.int32), 1.0, 9)
    assert baseline_sizes(QuantizedModel({"w": layer}, {}, ["w"]))["raw_bytes"] == 6


def _flip(data: bytes, pos: int) -> bytes:
    return data[:pos] + bytes([data[pos] ^ 0x5A]) + data[pos + 1 :]


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (lambda s, e: 2, "magic"),
        (lambda s, e: 6, "header"),
        (lambda s, e: HEADER_BYTES + 1, "side info"),
        (lambda s, e: e.total_bytes - e.float_bytes - e.weight_bytes, "chunk 0 of 'conv.weight'"),
        (lambda s, e: e.total_bytes - e.float_bytes - 1, "chunk 0 of 'fc.weight'"),
        (lambda s, e: len(s) - 1, "chunk 0 of 'fc.bias'"),
    ],
)
def test_corrupted_bitstream_raises_a_clear_error(where, message):
    enc = encode(_small_model(4))
    with pytest.raises(BitstreamError, match=message):
        decode(_flip(enc.bitstream, where(enc.bitstream, enc)))


@pytest.mark.parametrize("keep", [0, 5, HEADER_BYTES, HEADER_BYTES + 3, -50, -1])
def test_truncated_bitstream_raises_a_clear_error(keep):
    data = encode(_small_model(4)).bitstream
    with pytest.raises(BitstreamError, match="truncated"):
        decode(data[:keep])


def test_trailing_bytes_and_foreign_data_are_rejected():
    data = encode(_small_model(3)).bitstream
    with pytest.raises(BitstreamError, match="trailing"):
        decode(data + b"\0")
    with pytest.raises(BitstreamError, match="not an ecqx bitstream"):
        decode(b"PK\x03\x04" + bytes(40))
    assert issubclass(BitstreamError, ValueError)


def test_encode_rejects_inconsistent_models():
    layer = QuantizedLayer(torch.zeros(3, dtype=torch.int32), 1.0, 2)
    with pytest.raises(ValueError, match="targets missing"):
        encode(QuantizedModel({"w": layer}, {}, targets=["w", "gone"]))
    with pytest.raises(ValueError, match="both quantized"):
        encode(QuantizedModel({"w": layer}, {"w": torch.zeros(3)}, targets=["w"]))


def test_importing_ecqx_does_not_import_nncodec():
    code = "import sys, ecqx, ecqx.coding, ecqx.quantized; assert 'nncodec' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_nncodec_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "nncodec.extensions.deepCABAC", None)
    with pytest.raises(ImportError, match="make venv"):
        encode(_small_model(2))


def test_densest_deepcabac_streams_stay_under_the_values_per_byte_bound():
    """All-zero layers code densest (measured: 784 values per byte); the decoder's bound must admit them."""
    for levels in (torch.zeros(1_000_000, dtype=torch.int32), torch.full((1000,), -1, dtype=torch.int32)):
        enc = _round_trip(QuantizedModel({"w": QuantizedLayer(levels, 1.0, 2)}, {}, ["w"]))
        assert levels.numel() <= cabac_max_values(enc.weight_bytes)
        assert levels.numel() / enc.weight_bytes < 0.8 * CABAC_VALUES_PER_BYTE  # the bound's margin


def test_decode_takes_any_bytes_like_object():
    enc = encode(_small_model(3))
    _assert_identical(_small_model(3), decode(bytearray(enc.bitstream)))
    _assert_identical(_small_model(3), decode(memoryview(enc.bitstream)))
