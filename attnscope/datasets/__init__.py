"""Prompt sets and worlds: the SEE benchmark (:mod:`.see`, :mod:`.coco`) and the toy world (:mod:`.toyworld`)."""
