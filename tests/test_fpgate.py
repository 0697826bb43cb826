"""The FP sanity gate (issue 15): trivial baselines, the gate stopping a suite at chance before any
method, the override and its tags, the leaderboard leaving such runs out, the tables and report
showing the trivial baseline, and the suite recipes (scratch vs finetune)."""

from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from benchmarks import cli
from benchmarks.config import ConfigError, run_key
from benchmarks.data import DATASETS
from benchmarks.fpgate import Verdict, prior_scores, split_targets, trivial_baselines, trivial_metric
from benchmarks.leaderboard import load_suite_runs, write_leaderboard
from benchmarks.suite import load_suite, run_config
from benchmarks.train import task_metrics

# ------------------------------------------------------------------ trivial baselines


def test_majority_class_baseline_is_the_training_majority_scored_on_the_split():
    prior = prior_scores(torch.tensor([0, 0, 1, 2]), 3, multilabel=False)
    assert prior.tolist() == [0.5, 0.25, 0.25]
    assert trivial_metric(prior, torch.tensor([1, 1, 0, 2]), multilabel=False) == 0.25  # class 0 is 1 of 4


def test_label_prior_map_is_each_class_share_of_the_split_as_the_task_metric_counts_it():
    train = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=torch.float32)
    val = torch.tensor([[1, 0, 0], [0, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0]], dtype=torch.float32)
    prior = prior_scores(train, 3, multilabel=True)
    assert prior.tolist() == [0.5, 0.5, 0.0]
    # every example ties, so each class's AP is its positive share; class 2 has no positive: left out
    expected = (2 / 5 + 1 / 5) / 2
    assert trivial_metric(prior, val, multilabel=True) == pytest.approx(expected)
    constant = prior.expand(len(val), -1)
    assert trivial_metric(prior, val, multilabel=True) == task_metrics(constant, val, True)["map"]


class Items(Dataset):
    """A dataset without a label tensor (targets read by iterating)."""

    def __len__(self):
        return 3

    def __getitem__(self, i):
        return torch.zeros(2), i % 2


def test_split_targets_reads_label_tensors_without_decoding_inputs():
    assert split_targets(TensorDataset(torch.zeros(3, 2), torch.tensor([2, 0, 1]))).tolist() == [2, 0, 1]
    assert split_targets(Items()).tolist() == [0, 1, 0]


def test_voc_label_prior_reads_the_annotations_only(tmp_path, monkeypatch):
    from benchmarks.data import voc
    from tests.fixtures import make_voc

    make_voc(tmp_path, train=20, val=6)
    data = voc.load(tmp_path, seed=0, image_size=16)
    monkeypatch.setattr(voc.VocImages, "_decode", lambda path: pytest.fail("an image was decoded"))
    got = trivial_baselines(data)
    test = data.test.targets
    shares = [test[:, c].mean().item() for c in range(20) if test[:, c].any()]
    assert got["test"] == pytest.approx(sum(shares) / len(shares))


def test_verdict_passes_only_above_the_margin_share_of_the_gap():
    v = Verdict("map", fp_val=0.34, fp_test=0.3, trivial_val=0.27, trivial_test=0.27, margin=0.1)
    assert v.skill == pytest.approx(0.07 / 0.73) and not v.passed and v.status == "overridden"
    assert Verdict("accuracy", 0.2, 0.2, 0.1, 0.1, 0.1).passed  # closes 1/9 of the gap
    assert not Verdict("map", float("nan"), 0.0, 0.2, 0.2, 0.1).passed


def test_gate_settings_are_checked_and_leave_the_run_identity_alone():
    suite = load_suite("digits")
    base = run_config(suite, "ecq")
    for over in (["fp_gate=false"], ["fp_margin=0.3"]):
        assert run_key(run_config(suite, "ecq", overrides=over), "d") == run_key(base, "d")
    with pytest.raises(ConfigError, match=r"fp_margin: must be in \[0, 1\)"):
        run_config(suite, "ecq", overrides=["fp_margin=1.5"])


# ------------------------------------------------------------------ recipes


def test_voc_recipe_follows_the_pretrained_option(tmp_path):
    suite = load_suite("voc")
    scratch = run_config(suite, "ecq")
    assert scratch.recipe == "scratch" and scratch.pretrain.lr == 0.001 and scratch.pretrain.schedule == "constant"
    assert scratch.data.options["crop_scale"] == [0.5, 1.0]
    weights = run_config(suite, "ecq", overrides=[f"model.options.pretrained={tmp_path}/r18.pth"])
    assert weights.recipe == "finetune" and weights.pretrain.lr == 0.0001 and weights.pretrain.schedule == "cosine"
    assert "crop_scale" not in weights.data.options  # the loader's default crops (0.25..1 of the area)
    named = run_config(suite, "ecq", overrides=["recipe=finetune", "pretrain.lr=0.01"])
    assert named.recipe == "finetune" and named.pretrain.lr == 0.01, "command-line overrides win over the recipe"
    with pytest.raises(ConfigError, match="unknown recipe 'fast'; known: finetune, scratch"):
        run_config(suite, "ecq", overrides=["recipe=fast"])


def test_voc_crop_scale_option(tmp_path):
    from benchmarks.data import DatasetError, voc
    from tests.fixtures import make_voc

    make_voc(tmp_path, train=6, val=2)
    plain = voc.load(tmp_path, seed=0, image_size=16, crop_scale=None)
    view = voc.VocImages(plain.train.base, plain.train.ids, plain.train.targets, size=16, augment=False, seed=0)
    for i in range(len(plain.train)):
        x, expected = plain.train[i][0], view[i][0]
        assert torch.equal(x, expected) or torch.equal(x, expected.flip(-1)), "no crop: the val view, maybe flipped"
    cropped = voc.load(tmp_path, seed=0, image_size=16, crop_scale=[0.5, 1.0])
    assert cropped.train.crop_scale == (0.5, 1.0) and cropped.fingerprint == plain.fingerprint
    with pytest.raises(DatasetError, match=r"crop_scale must be null or \[low, high\]"):
        voc.load(tmp_path, seed=0, crop_scale=[0.0, 1.0])


def test_a_suite_with_one_recipe_is_refused(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nmodels: [mlp]\nmethods: {ecq: [{}]}\nrecipes: {scratch: {pretrain: {lr: 0.01}}}\n")
    with pytest.raises(ConfigError, match="recipes must name both scratch and finetune; missing: finetune"):
        load_suite(str(path))


# ------------------------------------------------------------------ the gate in a suite


@DATASETS.register("digits_shuffled")
def shuffled_digits(root=None, *, seed=0, download=False, limit=None, **options):
    """Digits with every split's labels permuted: nothing is learnable, the FP stage stays at chance."""
    data = DATASETS.get("digits")(root, seed=seed, download=download, limit=limit, **options)
    g = torch.Generator().manual_seed(7)
    for split in (data.train, data.val, data.test):
        y = split.tensors[1]
        y.copy_(y[torch.randperm(len(y), generator=g)])
    data.fingerprint = "shuffled-" + data.fingerprint
    return data


SUITE = (
    "name: gate\nbase: {data: {name: digits_shuffled}, pretrain: {epochs: 1}, train: {epochs: 1}}\n"
    "models: [mlp]\nseeds: [0]\nmethods:\n  uniform_qat: [{bits: 4}]\n  ecq: [{bits: 4}]\n"
)


def statuses(uri: str, suite: str = "gate") -> dict[str, int]:
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(f"ecqx-bench/{suite}")
    runs = [] if exp is None else mlflow.search_runs([exp.experiment_id], output_format="list")
    return {s: sum(r.info.status == s for r in runs) for s in {r.info.status for r in runs}}


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """(folder, tracking URI, the failing suite's exit code and stderr) after ``suite`` stopped at the gate."""
    tmp = tmp_path_factory.mktemp("gate")
    (tmp / "gate.yaml").write_text(SUITE)
    return tmp, f"sqlite:///{tmp}/mlflow.db"


def _main(tmp: Path, argv: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.chdir(tmp)
    capsys.readouterr()
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_gate_stops_a_suite_at_chance_before_any_method(gated, monkeypatch, capsys):
    tmp, uri = gated
    code, out, err = _main(tmp, ["suite", str(tmp / "gate.yaml"), "--tracking-uri", uri], monkeypatch, capsys)
    ours = [line for line in err.splitlines() if " INFO mlflow." not in line]  # MLflow's own store-creation log
    assert code == 2 and len(ours) == 1, err
    line = ours[0]
    assert line.startswith("ecqx-bench: error: FP gate: mlp seed 0 (suite gate): FP val accuracy ")
    assert "vs trivial baseline (majority class)" in line and "needs fp_margin 10.0%" in line
    assert "more epochs (pretrain.epochs, now 1)" in line and "another learning rate (pretrain.lr, now 0.001)" in line
    assert "--allow-weak-fp" in line and "pretrained weights" in line
    assert statuses(uri) == {}, "no MLflow run was created for any method"
    assert "uniform_qat" not in out and "ecq " not in out
    code, _, err = _main(
        tmp, ["run", "--suite", str(tmp / "gate.yaml"), "--method", "ecq", "--tracking-uri", uri], monkeypatch, capsys
    )
    assert code == 2 and "FP gate:" in err and statuses(uri) == {}, "a single run is gated the same way"


def test_override_proceeds_tags_the_runs_flags_the_tables_and_leaves_the_leaderboard(gated, monkeypatch, capsys):
    tmp, uri = gated
    argv = ["suite", str(tmp / "gate.yaml"), "--tracking-uri", uri, "--allow-weak-fp"]
    code, out, err = _main(tmp, argv, monkeypatch, capsys)
    assert code == 0, err
    assert "FP gate overridden (fp_gate=false): mlp seed 0" in out
    assert statuses(uri) == {"FINISHED": 2}
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([mlflow.get_experiment_by_name("ecqx-bench/gate").experiment_id])
    for r in runs:
        assert r.data.tags["fp_gate"] == "overridden" and "recipe" not in r.data.tags
        assert {"trivial_val_accuracy", "trivial_test_accuracy", "fp_val_accuracy", "fp_skill"} <= set(r.data.metrics)
        assert "pretrain_val_accuracy" in r.data.metrics, "the FP stage's epochs are logged to every run"
    table = (tmp / "results/gate/table.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| model |"))
    assert "**Weak FP baseline**: 2 run(s) (mlp)" in table and header.endswith("| FP gate |")
    assert "| mlp | trivial baseline (majority class) | - | - | 1 |" in table
    csv = pd.read_csv(tmp / "results/gate/table.csv")
    assert list(csv["method"][:2]) == ["fp32", "trivial"] and set(csv["fp_gate"].dropna()) == {"overridden"}
    report = (tmp / "results/gate/report.md").read_text()
    assert "## FP32 and the trivial baseline" in report and "Every run went past the FP gate" in report
    assert len(load_suite_runs("gate", uri, weak_fp=True)) == 2
    assert load_suite_runs("gate", uri).empty, "the leaderboard's run filter leaves them out"
    board = write_leaderboard(uri, tmp / "LEADERBOARD.md", [str(tmp / "gate.yaml")]).read_text()
    assert "No suite has verified runs yet." in board and runs[0].info.run_id not in board
