"""Measure from-scratch FP recipes of the ``voc`` suite on a generated VOC-layout set (issue 15).

Only the FP stage runs (the project's VOC loader, ``resnet18_voc``, the one training loop), on the CPU
with one torch thread, with the suite's config plus each recipe's overrides; the pick is by the best
validation mAP (the test mAP is reported, never used). Each recipe writes ``<out>/<name>.json``;
``--table`` writes ``<out>/recipes.md`` from them. The measurement of the README (voc scratch recipe)::

    python -m tests.voc_recipes --make-data --data /tmp/voc_shapes --out results/voc_recipes \
        suite lr1e-3_cos_nocrop lr1e-3_const_nocrop lr3e-4_cos_nocrop lr1e-3_cos_crop0.5 lr1e-3_const_crop0.5
    python -m tests.voc_recipes --out results/voc_recipes --table
    python -m tests.voc_recipes --data /tmp/voc_shapes --noise      # the FP gate's noise floor (README)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

RECIPES = {  # name -> dotted overrides on top of the voc suite
    "suite": ["pretrain.lr=0.0001", "pretrain.schedule=cosine", "data.options.crop_scale=[0.25,1.0]"],
    "lr1e-3_cos_nocrop": ["pretrain.lr=0.001", "pretrain.schedule=cosine", "data.options.crop_scale=null"],
    "lr1e-3_const_nocrop": ["pretrain.lr=0.001", "pretrain.schedule=constant", "data.options.crop_scale=null"],
    "lr3e-4_cos_nocrop": ["pretrain.lr=0.0003", "pretrain.schedule=cosine", "data.options.crop_scale=null"],
    "lr1e-3_cos_crop0.5": ["pretrain.lr=0.001", "pretrain.schedule=cosine", "data.options.crop_scale=[0.5,1.0]"],
    "lr1e-3_const_crop0.5": ["pretrain.lr=0.001", "pretrain.schedule=constant", "data.options.crop_scale=[0.5,1.0]"],
}


def measure(name: str, data_dir: Path, common: list[str], out: Path) -> dict:
    """Train the FP stage of recipe ``name``; returns (and writes) its per-epoch val mAP, test mAP of the
    epoch selected on val, the label-prior mAPs and the wall time (s)."""
    from benchmarks.fpgate import trivial_baselines
    from benchmarks.runner import build_model, load_data
    from benchmarks.suite import load_suite, run_config
    from benchmarks.train import evaluate, fit, seed_everything

    overrides = [*common, *RECIPES[name], "fp_gate=false"]
    cfg = run_config(load_suite("voc"), "ecq", {"bits": 4}, overrides=overrides)
    data = load_data(cfg, data_dir, Path("/tmp"))  # the cache dir is used by gsc only
    seed_everything(cfg.seed)
    model = build_model(cfg, data)
    rows = []

    def on_epoch(stage, epoch, row):
        rows.append(row)
        print(f"{name} epoch {epoch}: loss {row['loss']:.4f} val mAP {row['val_map']:.4f}", flush=True)

    t0 = time.perf_counter()
    res = fit(model, data, cfg.pretrain, device=torch.device("cpu"), seed=cfg.seed, stage="pretrain", on_epoch=on_epoch)
    model.load_state_dict(res.best)
    test = evaluate(model, data.test, True, cfg.eval_batch_size, torch.device("cpu"))["map"]
    record = {
        "recipe": name,
        "overrides": overrides,
        "best_epoch": res.best_epoch,
        "best_val_map": res.best_val,
        "test_map": test,
        "trivial": trivial_baselines(data),
        "history": rows,
        "seconds": time.perf_counter() - t0,
        "sizes": {k: len(getattr(data, k)) for k in ("train", "val", "test")},
    }
    (out / f"{name}.json").write_text(json.dumps(record, indent=2))
    return record


def noise_floor(suite: str, overrides: list[str], data_dir: Path | None, draws: int = 1000) -> str:
    """The FP gate's skill of a model that learned nothing (random Gaussian scores) on the suite's val
    split, over ``draws`` draws: mean, 99th percentile and max (fractions of the gap to 100 %)."""
    import numpy as np

    from benchmarks.fpgate import skill, split_targets, trivial_baselines
    from benchmarks.runner import load_data
    from benchmarks.suite import load_suite, run_config
    from benchmarks.train import task_metrics

    data = load_data(run_config(load_suite(suite), "ecq", overrides=overrides), data_dir, Path("/tmp"))
    y, trivial, rng = split_targets(data.val), trivial_baselines(data)["val"], np.random.default_rng(0)
    values = []
    for _ in range(draws):
        scores = torch.tensor(rng.standard_normal((len(y), data.num_classes)), dtype=torch.float32)
        values.append(skill(task_metrics(scores, y, data.multilabel)[data.task_metric], trivial))
    v = np.array(values)
    return (
        f"{suite}: val {len(y)} examples, trivial {100 * trivial:.1f}%: random-score skill mean "
        f"{100 * v.mean():.1f}%, p99 {100 * np.percentile(v, 99):.1f}%, max {100 * v.max():.1f}% ({draws} draws)"
    )


def table(out: Path) -> Path:
    """``<out>/recipes.md`` from the recipes' JSON files: one row per recipe, val mAP per epoch."""
    from benchmarks.provenance import git_state

    records = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    epochs = max(len(r["history"]) for r in records)
    head = ["recipe", "overrides", *[f"val e{e + 1}" for e in range(epochs)], "best val (epoch)", "test", "s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(records, key=lambda r: -r["best_val_map"]):
        vals = [f"{100 * h['val_map']:.1f}" for h in r["history"]] + [""] * (epochs - len(r["history"]))
        over = " ".join(
            o
            for o in r["overrides"]
            if o.split("=")[0] in ("pretrain.lr", "pretrain.schedule", "data.options.crop_scale")
        )
        best = f"{100 * r['best_val_map']:.1f} ({r['best_epoch']})"
        lines.append(
            "| "
            + " | ".join([r["recipe"], f"`{over}`", *vals, best, f"{100 * r['test_map']:.1f}", f"{r['seconds']:.0f}"])
            + " |"
        )
    t, first = records[0]["trivial"], records[0]
    common = " ".join(first["overrides"][: -len(RECIPES[first["recipe"]]) - 1])
    commit = git_state().get("git_commit", "?")[:10]
    text = (
        "# voc from scratch: FP recipes on a generated VOC-layout set (mAP, %)\n\n"
        f"Label prior (trivial baseline) mAP: val {100 * t['val']:.1f}, test {100 * t['test']:.1f}. Splits "
        f"{first['sizes']}. Common overrides: `{common}`. CPU, 1 torch thread; picked by the best val mAP; "
        "s: wall seconds of the FP stage (2 cores shared with other jobs, whose load varied).\n\n"
        + "\n".join(lines)
        + f"\n\nCommand: `python -m tests.voc_recipes` (see its docstring); commit {commit}.\n"
    )
    (out / "recipes.md").write_text(text)
    return out / "recipes.md"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.voc_recipes", description=__doc__)
    ap.add_argument("recipes", nargs="*", help=f"recipe names: {', '.join(RECIPES)}")
    ap.add_argument("--data", type=Path, default=Path("/tmp/voc_shapes"), help="data root (VOCdevkit/ inside)")
    ap.add_argument("--make-data", action="store_true", help="generate the set under --data first")
    ap.add_argument("--out", type=Path, default=Path("results/voc_recipes"))
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--size", type=int, default=96, help="image_size (px)")
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--noise", action="store_true", help="the gate's noise floor on voc (--data) and digits val")
    args = ap.parse_args(argv)
    if unknown := sorted(set(args.recipes) - set(RECIPES)):
        ap.error(f"unknown recipe(s) {', '.join(unknown)}; known: {', '.join(RECIPES)}")
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.make_data:
        from tests.voc_shapes import make_voc_shapes

        make_voc_shapes(args.data)
    common = [f"pretrain.epochs={args.epochs}", f"data.options.image_size={args.size}", "device=cpu"]
    for name in args.recipes:
        r = measure(name, args.data, common, args.out)
        print(f"{name}: best val mAP {r['best_val_map']:.4f} (epoch {r['best_epoch']}), test {r['test_map']:.4f}")
    if args.noise:
        print(noise_floor("voc", [f"data.options.image_size={args.size}"], args.data))
        print(noise_floor("digits", [], None))
    if args.table:
        print(table(args.out).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
