"""MS-COCO's object hierarchy: the 80 "thing" classes under their supercategories.

:data:`HIERARCHY` maps each COCO supercategory to its classes, in the order of
the COCO category ids, with ``person`` (the only member of supercategory
``person``) left out, as the SEE benchmark does: 11 superclasses, 79 classes.
Names are COCO's own (``"hair drier"``, ``"tv"``, ``"couch"``).

Note that some supercategory names are labels, not nouns for their members
("kitchen", "indoor", "outdoor", "sports"), so prompts that name a superclass
("a picture of a kitchen") do not mean what they do for "vehicle" or "food".
"""

from __future__ import annotations

EXCLUDED: tuple[str, ...] = ("person",)

HIERARCHY: dict[str, tuple[str, ...]] = {
    "vehicle": ("bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat"),
    "outdoor": ("traffic light", "fire hydrant", "stop sign", "parking meter", "bench"),
    "animal": ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"),
    "accessory": ("backpack", "umbrella", "handbag", "tie", "suitcase"),
    "sports": (
        "frisbee", "skis", "snowboard", "sports ball", "kite",
        "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    ),
    "kitchen": ("bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl"),
    "food": ("banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake"),
    "furniture": ("chair", "couch", "potted plant", "bed", "dining table", "toilet"),
    "electronic": ("tv", "laptop", "mouse", "remote", "keyboard", "cell phone"),
    "appliance": ("microwave", "oven", "toaster", "sink", "refrigerator"),
    "indoor": ("book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush"),
}
