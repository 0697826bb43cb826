"""``make perf``'s report: the goals of the speed issues and the Markdown of a ``benchmarks.perf`` run.

Every goal is an upper bound on a measured figure of one model on the CPU; the report marks each
``met`` or ``MISSED`` itself, from the numbers of the same run.
"""

from __future__ import annotations

GOALS = {  # (model, section, key) -> upper bound (assign: seconds, or the ECQx/ECQ ratio; step, memory: × FP)
    ("vgg16_cifar", "assign", "ecq"): 0.6,
    ("vgg16_cifar", "assign", "ecqx"): 1.5,
    ("vgg16_cifar", "assign", "ecqx/ecq"): 2.0,
    ("vgg16_cifar", "step", "uniform_qat"): 1.2,
    ("vgg16_cifar", "step", "ecq"): 1.3,
    ("vgg16_cifar", "step", "ecqx"): 3.0,
    ("vgg16_cifar", "step", "ecqx_k8"): 1.6,
    ("vgg16_cifar", "memory", "ecqx"): 1.5,
    ("mlp_gsc", "step", "uniform_qat"): 1.3,
    ("mlp_gsc", "step", "ecq"): 1.5,
    ("mlp_gsc", "step", "ecqx_k8"): 2.5,
}
SAME_COST = {"ecqx_ref": "ecqx", "ecqx_k8_ref": "ecqx_k8"}  # fidelity profile -> clean profile it should match


def goal_note(section: str, row: dict, value: float, key: str | None = None) -> str:
    """``≤ bound met|MISSED`` for a goal of this row (CPU), else ''."""
    bound = GOALS.get((row["model"], section, key or row["method"]))
    if bound is None or row["device"] != "cpu":
        return ""
    return f"≤ {bound} {'met' if value <= bound else 'MISSED'}"


def _loads(values) -> str:
    return "/".join(f"{v:.1f}" for v in values)


def _assignment(report: dict) -> list[str]:
    lines = [
        "## Assignment (all layers, median)",
        "",
        "| model | device | bits | method | weights | seconds | M weights/s | goal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["assignment"]:
        lines.append(
            f"| {r['model']} | {r['device']} | {r['bits']} | {r['method']} | {r['weights']:,} | "
            f"{r['seconds']:.3f} | {r['weights_per_second'] / 1e6:.1f} | "
            f"{goal_note('assign', r, r['seconds']) if r['bits'] == 4 else ''} |"
        )
    lines += ["", "| model | device | bits | ECQx / ECQ assignment | goal |", "|---|---|---|---|---|"]
    seconds = {(r["model"], r["device"], r["bits"], r["method"]): r["seconds"] for r in report["assignment"]}
    for (model, device, bits, method), sec in seconds.items():
        if method == "ecqx" and (model, device, bits, "ecq") in seconds:
            ratio = sec / seconds[(model, device, bits, "ecq")]
            row = {"model": model, "device": device, "method": "ecqx/ecq"}
            lines.append(f"| {model} | {device} | {bits} | {ratio:.2f} | {goal_note('assign', row, ratio)} |")
    return lines


def _steps(report: dict) -> list[str]:
    lines = [
        "## Training step (median; ratio to the FP step of the same run)",
        "",
        "| model | device | method | ms/step | × FP | goal |",
        "|---|---|---|---|---|---|",
    ]
    by = {(r["model"], r["device"], r["method"]): r for r in report["steps"]}
    for r in report["steps"]:
        note = goal_note("step", r, r["ratio_to_fp"])
        clean = by.get((r["model"], r["device"], SAME_COST.get(r["method"], "")))
        if clean is not None:  # fidelity profile: at the clean profile's cost (within 10 %)?
            ratio = r["seconds"] / clean["seconds"]
            note = f"{ratio:.2f}× {clean['method']}: {'same cost' if ratio <= 1.1 else 'COSTLIER'}"
        ms = r["seconds"] * 1e3
        lines.append(f"| {r['model']} | {r['device']} | {r['method']} | {ms:.1f} | {r['ratio_to_fp']:.2f} | {note} |")
    return lines


def _memory(report: dict) -> list[str]:
    lines = [
        "## Peak memory of a step (fresh process each; ratio to FP)",
        "",
        "| model | device | method | MiB | × FP | goal |",
        "|---|---|---|---|---|---|",
    ]
    if not report["memory"]:
        lines = ["## Peak memory: not measured (--no-memory)"]
    for r in report["memory"]:
        lines.append(
            f"| {r['model']} | {r['device']} | {r['method']} | {r['peak_bytes'] / 2**20:.0f} | "
            f"{r['ratio_to_fp']:.2f} | {goal_note('memory', r, r['ratio_to_fp'])} |"
        )
    if report.get("chunk_effect"):
        lines += [
            "",
            "LRP on sub-batches (``relevance_chunk``, off by default; rows ecqx_chunk16): max over layers of "
            "max |R_chunked − R| / max |R| for one batch:",
            "",
            "| model | device | chunk | max relative change |",
            "|---|---|---|---|",
        ]
        for r in report["chunk_effect"]:
            lines.append(f"| {r['model']} | {r['device']} | {r['chunk']} | {r['max_relative_change']:.1e} |")
    return lines


def markdown(report: dict, doc: str) -> str:
    """The Markdown report of a ``benchmarks.perf`` run (``doc``: the module docstring, for the methods)."""
    lines = [
        "# make perf",
        "",
        f"Command: `{report['command']}`  ",
        f"Commit: `{report['commit']}`  ",
        f"Machine: {report['machine']}  ",
        f"torch {report['torch']}, {report['threads']} threads, "
        f"wall time {report['wall_seconds']:.0f} s, load average (1/5/15 min) at start "
        f"{_loads(report['load_average_start'])}, at end {_loads(report['load_average_end'])}",
        "",
    ]
    lines += _assignment(report) + [""] + _steps(report) + [""] + _memory(report)
    lines += ["", "Methods: " + " ".join(doc.split("Three measurements")[1].split("Writes")[0].split())]
    return "\n".join(lines) + "\n"
