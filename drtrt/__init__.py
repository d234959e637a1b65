"""drtrt: diabetic-retinopathy screening on the edge.

Importing this package imports no framework: the runtime installs without torch.
"""

__version__ = "0.1.0"

GRADE_NAMES = ("no DR", "mild NPDR", "moderate NPDR", "severe NPDR", "proliferative DR")
LESION_NAMES = ("background", "EX", "SE", "MA", "HE")
LESION_LONG_NAMES = {
    "EX": "hard exudates",
    "SE": "soft exudates",
    "MA": "microaneurysms",
    "HE": "haemorrhages",
}
REFERABLE_MIN_GRADE = 2
