"""``make perf``'s report marks every goal met or missed itself, for both models."""

from benchmarks.perf_report import GOALS, markdown

DOC = "Three measurements per device: timed. Writes files."


def _report():
    steps = []
    for model, fp in (("vgg16_cifar", 0.5), ("mlp_gsc", 0.006)):
        for method, ratio in (
            ("fp", 1.0),
            ("uniform_qat", 1.1),
            ("ecq", 1.4),
            ("ecqx", 2.9),
            ("ecqx_k8", 1.7),
            ("lrp_pass", 1.2),
        ):
            steps.append(
                {"model": model, "device": "cpu", "method": method, "seconds": fp * ratio, "ratio_to_fp": ratio}
            )
        steps.append(
            {"model": model, "device": "cpu", "method": "ecqx_ref", "seconds": fp * 2.9 * 1.5, "ratio_to_fp": 4.35}
        )
    assignment = [
        {
            "model": "vgg16_cifar",
            "device": "cpu",
            "bits": 4,
            "method": m,
            "weights": 10,
            "seconds": s,
            "weights_per_second": 10 / s,
        }
        for m, s in (("ecq", 0.1), ("ecqx", 0.3))
    ]
    memory = [
        {"model": "vgg16_cifar", "device": "cpu", "method": m, "peak_bytes": b * 2**20, "ratio_to_fp": b / 100}
        for m, b in (("fp", 100), ("ecqx", 140), ("lrp_pass", 120))
    ]
    return {
        "command": "python -m benchmarks.perf",
        "commit": "abc",
        "machine": "x",
        "torch": "2",
        "threads": 2,
        "wall_seconds": 1.0,
        "load_average_start": (1, 1, 1),
        "load_average_end": (1, 1, 1),
        "assignment": assignment,
        "steps": steps,
        "memory": memory,
        "chunk_effect": [{"model": "vgg16_cifar", "device": "cpu", "chunk": 16, "max_relative_change": 3e-7}],
    }


def test_goals_marked_for_both_models_and_fidelity_rows_judged_against_clean():
    text = markdown(_report(), DOC)
    rows = {tuple(c.strip() for c in line.split("|")[1:4]): line for line in text.splitlines() if line.startswith("| ")}
    assert "≤ 1.3 MISSED" in rows[("vgg16_cifar", "cpu", "ecq")]
    assert "≤ 1.5 met" in rows[("mlp_gsc", "cpu", "ecq")]
    assert "≤ 2.5 met" in rows[("mlp_gsc", "cpu", "ecqx_k8")]
    assert "≤ 1.6 MISSED" in rows[("vgg16_cifar", "cpu", "ecqx_k8")]
    assert "1.50× ecqx: COSTLIER" in rows[("vgg16_cifar", "cpu", "ecqx_ref")]
    assert "| vgg16_cifar | cpu | 4 | 3.00 | ≤ 2.0 MISSED |" in text  # ECQx / ECQ assignment
    assert "| vgg16_cifar | cpu | ecqx | 1450.0 | 2.90 | ≤ 3.0 met |" in text  # step
    assert "| vgg16_cifar | cpu | ecqx | 140 | 1.40 | ≤ 1.5 met |" in text  # memory
    assert "3.0e-07" in text
    assert {model for model, _, _ in GOALS} == {"vgg16_cifar", "mlp_gsc"}


def test_floor_under_ecqx_from_the_lrp_pass_and_the_assignment_of_the_same_run():
    text = markdown(_report(), DOC)
    # vgg16: FP 0.5 s, LRP pass 1.2x, ECQ 0.1 s = 0.2x, ECQx 0.3 s = 0.6x: floors 1 + 1.2 + 0.6, 1 + 0.15 + 0.6
    assert "| vgg16_cifar | cpu | 1.20 | 0.20 | 0.60 | 2.80 | 1.75 | 2.90 | 1.70 | 1.20 |" in text
    floors = text.split("## What bounds ECQx")[1]
    assert "mlp_gsc" not in floors  # no assignment rows for it in this report: no floor is made up
    without = _report()
    without["steps"] = [r for r in without["steps"] if r["method"] != "lrp_pass"]
    assert "What bounds ECQx" not in markdown(without, DOC)
