"""Names the erasure code and the command line share, kept free of heavy imports (``--help`` stays fast)."""

METHODS = ("uce", "rece", "uce-progressive", "rece-progressive")  # what the runner can erase with
TOKEN_CHOICES = ("last", "eos-aligned")  # which token rows' keys an edit changes (see embeddings.py)
SUBSET_KINDS = ("layers", "resolutions", "places", "kv")  # how an edit splits into parts for an ablation
