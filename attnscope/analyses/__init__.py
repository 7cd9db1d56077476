"""Metrics: plain functions on arrays and records, each with known-answer tests.

* :mod:`~attnscope.analyses.stats` — percentile-bootstrap intervals (plain,
  clustered by prompt, paired before/after).
* :mod:`~attnscope.analyses.regions` — object regions from attention maps
  (aggregate + Otsu) or from ground-truth/user masks; map resizing.
* :mod:`~attnscope.analyses.binding` — binding score, IoU/IoA, JS divergence,
  centre-of-mass distance, drift between runs, attribute–object pairing.
* :mod:`~attnscope.analyses.side_effects` — SEE-style target/retain accuracy,
  evasion and attribute leakage tables with intervals.
* :mod:`~attnscope.analyses.entanglement` — concept similarity through every
  cross-attention K/V projection, before vs after an edit; 2-D maps.
* :mod:`~attnscope.analyses.concepts` — concept sets around an erased class
  and each concept's relation to it (sibling, variant, ...).
* :mod:`~attnscope.analyses.run_binding` — binding and drift read from run
  files, runs paired by prompt and seed, per layer and step.
* :mod:`~attnscope.analyses.attribution` — integrated gradients of an
  attention or prediction target to the prompt's tokens.
* :mod:`~attnscope.analyses.localisation` — does a word's attention land on
  its object: DAAM-style IoU, mass ratio, own-object share, mass by token kind.
* :mod:`~attnscope.analyses.dispersal` — entropy, top-k share, spatial
  spread and in-object share of a word's map; before vs after an edit.
* :mod:`~attnscope.analyses.outcome` — attention features of each image
  against the judge's leakage answer: logistic regression, AUC, effects.
* :mod:`~attnscope.analyses.ablation` — side effects per part of an edit.
* :mod:`~attnscope.analyses.tradeoff` — metrics over edits of growing
  strength, and a pre-sampling predictor of the retain loss.

Names are imported on first use, so ``import attnscope.analyses`` is cheap
(entanglement pulls in torch only when asked for).
"""

from attnscope._lazy import lazy_attributes

_EXPORTS = {
    "Interval": "stats",
    "bootstrap_ci": "stats",
    "cluster_bootstrap_ci": "stats",
    "paired_cluster_bootstrap": "stats",
    "heatmap_iou": "localisation",
    "mass_ratio": "localisation",
    "own_share": "localisation",
    "run_localisation": "localisation",
    "aggregate": "regions",
    "otsu_mask": "regions",
    "otsu_threshold": "regions",
    "regions_from_attention": "regions",
    "regions_from_masks": "regions",
    "resize": "regions",
    "Binding": "binding",
    "binding_score": "binding",
    "center_of_mass": "binding",
    "com_distance": "binding",
    "drift": "binding",
    "first_wrong": "binding",
    "ioa": "binding",
    "iou": "binding",
    "js_divergence": "binding",
    "measure_binding": "binding",
    "pair_attributes": "binding",
    "relative_binding": "binding",
    "Drift": "binding",
    "accuracy_table": "side_effects",
    "attribute_leakage": "side_effects",
    "bin_by": "side_effects",
    "evasion": "side_effects",
    "retain_accuracy": "side_effects",
    "side_effect_tables": "side_effects",
    "target_accuracy": "side_effects",
    "EntanglementResult": "entanglement",
    "KVImages": "entanglement",
    "compare": "entanglement",
    "Map2D": "entanglement",
    "kv_images": "entanglement",
    "map_2d": "entanglement",
    "relation": "concepts",
    "toy_concepts": "concepts",
    "DriftStudy": "run_binding",
    "drift_study": "run_binding",
    "pair_runs": "run_binding",
    "run_binding": "run_binding",
    "Target": "attribution",
    "TokenAttribution": "attribution",
    "Trace": "attribution",
    "attention_target": "attribution",
    "integrated_gradients": "attribution",
    "noise_target": "attribution",
    "trace": "attribution",
    "DispersalStudy": "dispersal",
    "dispersal": "dispersal",
    "dispersal_study": "dispersal",
    "entropy": "dispersal",
    "spread": "dispersal",
    "top_share": "dispersal",
    "OutcomeFit": "outcome",
    "attention_features": "outcome",
    "auc": "outcome",
    "fit_outcome": "outcome",
    "leakage_images": "outcome",
    "ablation_table": "ablation",
    "leading_parts": "ablation",
    "predictor_correlation": "tradeoff",
    "spearman": "tradeoff",
    "tradeoff_rows": "tradeoff",
    "cluster_bootstrap": "stats",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_attributes(__name__, _EXPORTS)
