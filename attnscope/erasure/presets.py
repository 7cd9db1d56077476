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
* RECE starts from such a UCE edit, then per epoch: λ = 0.1, η_e = 1,
  η_p = 0.1 (all scripts), λ_r = 1e-3 and 5 epochs for objects, λ_r = 1e-3
  and 10 epochs for styles, λ_r = 0.1 and 10 epochs for nudity. These are
  the argparse defaults of the released object/artist/nudity scripts; the
  values behind each table of the paper are not stated per experiment, so
  they are assumed equal to those defaults. The article reports 5 epochs
  taking ~3.4 s.
* RECE's code pairs all 77 token positions; ``"eos-aligned"`` is the
  closest token choice here (see :mod:`attnscope.erasure.rece`).
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
        Preset("rece-object", "rece", {**_RECE, "lam_r": 1e-3, "epochs": 5}, "", "RECE object script defaults"),
        Preset("rece-style", "rece", {**_RECE, "lam_r": 1e-3, "epochs": 10}, "", "RECE artist script defaults"),
        Preset("rece-nudity", "rece", {**_RECE, "lam_r": 1e-1, "epochs": 10}, "", "RECE nudity script defaults"),
    )
}
