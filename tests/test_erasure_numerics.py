"""RECE/UCE in float64 against an independent float64 reference, on ill-conditioned matrices.

The reference below solves both RECE steps as ordinary least-squares problems
(``numpy.linalg.lstsq`` on the stacked, weighted system — SVD-based), not by
forming Gram matrices and solving normal equations as attnscope does.
"""

import numpy as np
import pytest
import torch

from attnscope.erasure.layers import KVStack
from attnscope.erasure.presets import PRESETS
from attnscope.erasure.rece import adversarial_matrix, rece_epoch
from attnscope.erasure.uce import default_preserve_scale, erase_uce
from attnscope.models import tiny_sd_pipeline

D, OUT, N_KEYS, N_KEEP = 48, 160, 5, 7
LAM, LAM_R, ERASE, PRESERVE = 0.1, 1e-7, 1.0, 0.1


def ill_conditioned(rng: np.random.Generator, rows: int, cols: int, singular: np.ndarray) -> np.ndarray:
    """A ``(rows, cols)`` matrix with the given singular values and random singular vectors."""
    u, _ = np.linalg.qr(rng.standard_normal((rows, cols)))
    v, _ = np.linalg.qr(rng.standard_normal((cols, cols)))
    return (u * singular) @ v.T


def reference_epoch(current, original, keys, guides, preserve):
    """One RECE epoch by least squares, float64: (new weights, adversarial rows)."""
    # c' = argmin Σ_l ‖W'_l c' − W_l c‖² + λ_r ‖c'‖²  ⇔  lstsq([W'; √λ_r I] c' = [W c; 0]), all rows at once
    system = np.vstack([current, np.sqrt(LAM_R) * np.eye(D)])
    targets = np.vstack([original @ keys.T, np.zeros((D, len(keys)))])
    adversarial = np.linalg.lstsq(system, targets, rcond=None)[0].T
    # W = argmin λ‖W − W'‖² + η_e Σ ‖W c'_i − W' g_i‖² + η_p Σ ‖W c_j − W' c_j‖², one lstsq for all rows of W
    inputs = np.vstack([np.sqrt(LAM) * np.eye(D), np.sqrt(ERASE) * adversarial, np.sqrt(PRESERVE) * preserve])
    outputs = np.vstack([np.sqrt(LAM) * current.T, np.sqrt(ERASE) * (current @ guides.T).T,
                         np.sqrt(PRESERVE) * (current @ preserve.T).T])
    return np.linalg.lstsq(inputs, outputs, rcond=None)[0].T, adversarial


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_rece_epoch_in_float64_matches_an_independent_reference_at_condition_1e6():
    rng = np.random.default_rng(0)
    current = ill_conditioned(rng, OUT, D, np.geomspace(1.0, 3e-4, D))  # the edited K/V stack W'
    original = current + 0.05 * rng.standard_normal((OUT, D))  # W before the edit
    keys, guides, preserve = (rng.standard_normal((n, D)) for n in (N_KEYS, N_KEYS, N_KEEP))
    gram = current.T @ current + LAM_R * np.eye(D)
    assert np.linalg.cond(gram) >= 1e6

    expected_weight, expected_adversarial = reference_epoch(current, original, keys, guides, preserve)

    tensors = [torch.from_numpy(x) for x in (current, original, keys, guides, preserve)]
    weight, adversarial = rece_epoch(*tensors, lam=LAM, lam_r=LAM_R, erase_scale=ERASE, preserve_scale=PRESERVE)
    assert relative(adversarial.numpy(), expected_adversarial) <= 1e-6
    assert relative(weight.numpy(), expected_weight) <= 1e-6
    # what the float64 path is for: the same sums and solves in float32 are far off
    single = torch.from_numpy(keys).float() @ adversarial_matrix(
        torch.from_numpy(current).float(), torch.from_numpy(original).float(), LAM_R).T
    assert relative(single.double().numpy(), expected_adversarial) > 1e-4


def test_stacks_are_float64_and_edits_are_written_in_the_model_dtype():
    stack = KVStack.from_tensors({"a": torch.ones(3, 4, dtype=torch.float16), "b": torch.ones(2, 4)})
    assert stack.weight.dtype == torch.float64
    assert {t.dtype for t in stack.split(torch.float16).values()} == {torch.float16}


def test_preserve_scale_defaults_to_the_uce_reference_and_says_so():
    assert default_preserve_scale([]) == 1.0
    assert default_preserve_scale(["car"]) == pytest.approx(0.5)
    assert default_preserve_scale([f"c{i}" for i in range(30)]) == pytest.approx(0.1)
    pipe = tiny_sd_pipeline()
    edit = erase_uce(pipe, ["bench"], preserve=["car", "bird", "cake"])
    assert edit.meta["hyper"]["preserve_scale"] == pytest.approx(0.25)  # max(0.1, 1/len(['', car, bird, cake]))
    assert edit.meta["preserve_scale_from"].startswith("UCE reference default")
    assert erase_uce(pipe, ["bench"], preserve=["car"], preserve_scale=2.0).meta["preserve_scale_from"] == "given"


def test_rece_presets_follow_the_released_readme():
    nudity, style, objects = (PRESETS[f"rece-{kind}"].kwargs for kind in ("nudity", "style", "object"))
    assert (nudity["epochs"], nudity["lam_r"]) == (3, 0.1)
    assert (style["epochs"], style["lam_r"]) == (1, 1e-3) and (objects["epochs"], objects["lam_r"]) == (1, 1e-3)
    assert all(p["lam"] == 0.1 and p["preserve_scale"] == 0.1 for p in (nudity, style, objects))
