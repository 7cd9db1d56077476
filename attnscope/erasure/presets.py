"""Published UCE/RECE settings for objects, styles and nudity.

Sources: the UCE paper (Gandikota et al., WACV 2024) and its released
training scripts; the RECE paper (Gong et al., ECCV 2024), an article on it,
and its released training scripts. What is taken from where, and what is
assumed:

* UCE (paper-era script): λ = 0.5, η_e = 1, η_p = 0.1, erased rows from the
  concept's last word token through EOS/padding aligned with the guide
  (``"eos-aligned"``), guide = the empty prompt, and the empty prompt
  preserved. The newer UCE script uses the last word token only, λ = 0.5,
  η_p = 1 and guides styles towards ``"art"``; the style preset takes that
  guide, the rest from the paper-era script.
* RECE starts from such a UCE edit, then per epoch the UCE solve with
  λ = 0.1 and η_p = 0.1 ("the coefficients of Eq. 3: λ_1 = 0.1 and
  λ_2 = 0.1" for all concepts) and η_e = 1 (the scripts' default). Epochs
  and λ_r are those the later README of the released code
  (CharlesGong12/RECE, "Experiment Details"/"Notes") gives as the settings
  of the paper's experiments, which replace the first release's argparse
  defaults (5/10/10 epochs): nudity λ_r = 0.1 and 3 epochs (its README
  command: ``--epochs 3 --regular_scale 0.1 --lamb 0.1 --preserve_scale
  0.1``); artistic styles λ_r = 1e-3, 1 epoch; objects that UCE erases
  poorly (e.g. church, garbage truck) λ_r = 1e-3, 1 epoch — the object
  preset — while objects UCE erases well take λ_r = 0.1 for their one
  epoch (pass ``--lambda-r 0.1``) and objects UCE already erases fully get
  no RECE epoch. The article reports 5 epochs taking ~3.4 s.
* RECE's code pairs position p of the adversarial embedding with position p
  of the guide for all 77 positions; ``"eos-aligned"`` is the closest token
  choice here, aligned at the last word instead (see :mod:`attnscope.erasure.rece`).
* Preserved concepts are the user's (the papers preserve, e.g., other
  artists for styles); the presets add none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    """A named setting: the method and the keyword arguments of ``erase_uce``/``erase_rece``."""

    name: str
    method: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    guide: str = ""
    source: str = ""


_UCE = {"lam": 0.5, "erase_scale": 1.0, "preserve_scale": 0.1, "token_choice": "eos-aligned"}
_RECE = {
    "uce_lam": 0.5,
    "lam": 0.1,
    "erase_scale": 1.0,
    "preserve_scale": 0.1,
    "token_choice": "eos-aligned",
}

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("uce-object", "uce", dict(_UCE), "", "UCE paper-era script defaults"),
        Preset("uce-style", "uce", dict(_UCE), "art", "UCE paper-era defaults; guide 'art' from the newer script"),
        Preset("uce-nudity", "uce", dict(_UCE), "", "UCE paper-era defaults (the nudity edit RECE starts from)"),
        Preset("rece-object", "rece", {**_RECE, "lam_r": 1e-3, "epochs": 1}, "",
               "RECE README: objects difficult for UCE, λ_r 1e-3, 1 epoch"),
        Preset("rece-style", "rece", {**_RECE, "lam_r": 1e-3, "epochs": 1}, "",
               "RECE README: artistic styles, λ_r 1e-3, 1 epoch"),
        Preset("rece-nudity", "rece", {**_RECE, "lam_r": 1e-1, "epochs": 3}, "",
               "RECE README: nudity, λ_r 0.1, 3 epochs"),
    )
}
