import pytest

from benchmarks.config import (
    ConfigError,
    RunConfig,
    from_dict,
    make_run_config,
    parse_overrides,
    pretrain_key,
    run_key,
)
from benchmarks.suite import load_suite


def test_unknown_key_is_named_with_allowed_keys():
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) in train: epoch; allowed: epochs, batch_size"):
        from_dict(RunConfig, {"train": {"epoch": 3}})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"seed": "zero"}, "seed: expected int, got 'zero'"),
        ({"train": {"lr": "fast"}}, "train.lr: expected float, got 'fast'"),
        ({"train": {"epochs": True}}, "train.epochs: expected int, got True"),
        ({"data": {"limit": 2.5}}, "data.limit: expected int, got 2.5"),
        ({"params": [1, 2]}, "params: expected a mapping"),
    ],
)
def test_wrong_types_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_dict(RunConfig, data)


def test_ints_are_accepted_as_floats_and_none_for_optionals():
    cfg = from_dict(RunConfig, {"train": {"lr": 1}, "data": {"limit": None}})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)


def test_overrides_are_dotted_and_yaml_typed():
    assert parse_overrides(["train.epochs=3", "params.Lambda=0.5", "model.name=mlp", "data.limit=null"]) == {
        "train": {"epochs": 3},
        "params": {"Lambda": 0.5},
        "model": {"name": "mlp"},
        "data": {"limit": None},
    }
    with pytest.raises(ConfigError, match="not of the form key=value"):
        parse_overrides(["train.epochs"])


def test_method_defaults_then_grid_then_overrides():
    cfg = make_run_config({"suite": "x"}, "ecqx", {"bits": 3}, {"params": {"p": 0.2}})
    assert cfg.params.bits == 3 and cfg.params.p == 0.2 and cfg.params.rho == 2.0
    assert type(cfg.params).__qualname__ == "ECQx.Config", "params are the method's typed Config"


def test_digits_suite_loads_over_base():
    suite = load_suite("digits")
    assert suite.models == ["mlp", "small_cnn"] and len(suite.seeds) >= 3
    assert suite.base["pretrain"]["epochs"] > 0 and suite.base["data"]["name"] == "digits"
    assert {"ecqx", "ecq", "uniform_qat", "magnitude"} == set(suite.methods)
    with pytest.raises(ConfigError, match="unknown suite 'nope'; known: .*digits"):
        load_suite("nope")


def test_run_identity_is_pinned():
    """Two pinned hashes: a change here silently orphans every tracked run; bump on purpose only."""
    cfg = make_run_config({"suite": "digits", "data": {"name": "digits"}}, "ecq", {"bits": 4, "Lambda": 0.2}, {})
    assert run_key(cfg, "fingerprint") == "25b0328842a580b6"
    assert pretrain_key(cfg, "fingerprint") == "23176843bed9f7b5"
    other = make_run_config({"suite": "other", "data": {"name": "digits"}}, "ecq", {"bits": 4, "Lambda": 0.2}, {})
    assert run_key(other, "fingerprint") == run_key(cfg, "fingerprint"), "the suite name is not part of identity"
    assert run_key(cfg, "other data") != run_key(cfg, "fingerprint")
