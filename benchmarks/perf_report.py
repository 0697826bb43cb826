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


def _head(title: str, columns: list[str]) -> list[str]:
    """A section title and the head of its Markdown table."""
    return [title, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def _loads(values) -> str:
    return "/".join(f"{v:.1f}" for v in values)


def _assignment(report: dict) -> list[str]:
    lines = _head(
        "## Assignment (all layers, median)",
        ["model", "device", "bits", "method", "weights", "seconds", "M weights/s", "goal"],
    )
    for r in report["assignment"]:
        lines.append(
            f"| {r['model']} | {r['device']} | {r['bits']} | {r['method']} | {r['weights']:,} | "
            f"{r['seconds']:.3f} | {r['weights_per_second'] / 1e6:.1f} | "
            f"{goal_note('assign', r, r['seconds']) if r['bits'] == 4 else ''} |"
        )
    lines += _head("", ["model", "device", "bits", "ECQx / ECQ assignment", "goal"])[1:]
    seconds = {(r["model"], r["device"], r["bits"], r["method"]): r["seconds"] for r in report["assignment"]}
    for (model, device, bits, method), sec in seconds.items():
        if method == "ecqx" and (model, device, bits, "ecq") in seconds:
            ratio = sec / seconds[(model, device, bits, "ecq")]
            row = {"model": model, "device": device, "method": "ecqx/ecq"}
            lines.append(f"| {model} | {device} | {bits} | {ratio:.2f} | {goal_note('assign', row, ratio)} |")
    return lines


def _steps(report: dict) -> list[str]:
    lines = _head(
        "## Training step (median; ratio to the FP step of the same run)",
        ["model", "device", "method", "ms/step", "× FP", "goal"],
    )
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
    lines = _head(
        "## Peak memory of a step (fresh process each; ratio to FP)",
        ["model", "device", "method", "MiB", "× FP", "goal"],
    )
    if not report["memory"]:
        lines = ["## Peak memory: not measured (--no-memory)"]
    for r in report["memory"]:
        lines.append(
            f"| {r['model']} | {r['device']} | {r['method']} | {r['peak_bytes'] / 2**20:.0f} | "
            f"{r['ratio_to_fp']:.2f} | {goal_note('memory', r, r['ratio_to_fp'])} |"
        )
    if report.get("chunk_effect"):
        lines += [""] + _head(
            "LRP on sub-batches (``relevance_chunk``, off by default; rows ecqx_chunk16): max over layers of "
            "max |R_chunked − R| / max |R| for one batch:",
            ["model", "device", "chunk", "max relative change"],
        )
        for r in report["chunk_effect"]:
            lines.append(f"| {r['model']} | {r['device']} | {r['chunk']} | {r['max_relative_change']:.1e} |")
    return lines


def _floors(report: dict) -> list[str]:
    """What bounds ECQx from below, from rows of the same run: a step with relevance every k steps
    costs at least the FP step + the LRP pass / k + ECQx's assignment (4 bit)."""
    steps = {(r["model"], r["device"], r["method"]): r for r in report["steps"]}
    assign = {(r["model"], r["device"], r["method"]): r["seconds"] for r in report["assignment"] if r["bits"] == 4}
    memory = {(r["model"], r["device"], r["method"]): r["ratio_to_fp"] for r in report["memory"]}
    lines = _head(
        "## What bounds ECQx (same run; ratios to the FP step)",
        ["model", "device", "LRP pass", "ECQ assignment", "ECQx assignment", "floor ECQx", "floor ECQx k8"]
        + ["ECQx", "ECQx k8", "LRP pass peak memory"],
    )
    for (model, device, method), fp in steps.items():
        lrp = steps.get((model, device, "lrp_pass"))
        if method != "fp" or lrp is None or (model, device, "ecqx") not in assign:
            continue
        a_ecq, a_ecqx = (assign.get((model, device, m), float("nan")) / fp["seconds"] for m in ("ecq", "ecqx"))
        got = [steps[(model, device, m)]["ratio_to_fp"] for m in ("ecqx", "ecqx_k8")]
        mem = memory.get((model, device, "lrp_pass"))
        lines.append(
            f"| {model} | {device} | {lrp['ratio_to_fp']:.2f} | {a_ecq:.2f} | {a_ecqx:.2f} | "
            f"{1 + lrp['ratio_to_fp'] + a_ecqx:.2f} | {1 + lrp['ratio_to_fp'] / 8 + a_ecqx:.2f} | "
            f"{got[0]:.2f} | {got[1]:.2f} | {'' if mem is None else f'{mem:.2f}'} |"
        )
    if len(lines) == 4:
        return []
    return lines + [
        "",
        "floor ECQx = 1 + LRP pass + ECQx assignment; floor ECQx k8 = 1 + LRP pass / 8 + ECQx assignment (that "
        "assignment recomputes ln R, which k8 keeps between passes: a slight overestimate); the straight-through "
        "update and write-back come on top. LRP pass peak memory: the pass alone (model, activations, relevance EMA).",
    ]


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
    floors = _floors(report)
    lines += [""] + floors if floors else []
    lines += ["", "Methods: " + " ".join(doc.split("Three measurements")[1].split("Writes")[0].split())]
    return "\n".join(lines) + "\n"
