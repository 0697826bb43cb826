"""Fidelity profiles: where the official ECQx code (d-becking/ECQx) differs from the clean
formulation of the paper, each difference is a named config switch; ``profile`` sets them together.

    switch               clean        reference (what the official training code does)
    ste                  identity     centroid_signed: a second optimizer over the latent copies whose
                                      gradient is grad · c at a non-zero centroid c (grad at zero)
    pmf                  exact        reference: the P_0 >= 0.5 rescale loop reads the already-changed
                                      P_0, so clusters after zero get less probability
    lambda_max_rule      thesis       reference: [(c_ext - w_ext)^2 - (0 - w_ext)]^2 / ΔI, larger side
    relevance_model      quantized    stepped: LRP on the weights the optimizer step just moved,
                                      before re-quantization
    relevance_ema_reset  never        epoch: the relevance EMA restarts every epoch
    band                 clip         reference: no β search when s_ECQ <= p; else multiplicative β
                                      steps 0.1 / 0.5 / 0.75, β <= 1, at most 50 iterations
    relevance_start      logit        batch_mean: the true-class logit divided by the batch size

A method's ``Config`` declares the switches it has with default ``None``; ``resolve_profile`` (called
in ``__post_init__``) fills every ``None`` from the chosen profile, so explicit values win. The
``profile`` field itself is a shorthand: a run's identity depends on the resolved switches only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ecqx.checks import check_choice

PROFILES = ("clean", "reference")
RELEVANCE_MODELS = ("quantized", "stepped")  # which weights LRP runs on after a step
RELEVANCE_RESETS = ("never", "epoch")  # when the relevance EMA restarts
RELEVANCE_STARTS = ("logit", "batch_mean")  # start relevance: the true-class logit, or it / batch size
SHORTHAND = "profile"  # the config field naming the profile (not part of a run's identity)
SWITCHES: dict[str, dict[str, str]] = {  # switch -> {profile: value}
    "ste": {"clean": "identity", "reference": "centroid_signed"},
    "pmf": {"clean": "exact", "reference": "reference"},
    "lambda_max_rule": {"clean": "thesis", "reference": "reference"},
    "relevance_model": {"clean": "quantized", "reference": "stepped"},
    "relevance_ema_reset": {"clean": "never", "reference": "epoch"},
    "band": {"clean": "clip", "reference": "reference"},
    "relevance_start": {"clean": "logit", "reference": "batch_mean"},
}


def resolve_profile(config: Any) -> None:
    """Fill every switch of the (frozen) dataclass ``config`` that is None from ``config.profile``."""
    check_choice("profile", config.profile, PROFILES)
    for f in dataclasses.fields(config):
        if f.name in SWITCHES and getattr(config, f.name) is None:
            object.__setattr__(config, f.name, SWITCHES[f.name][config.profile])
