"""The synthetic production line: crimped ring terminals on a belt, good and defective.

    twinspect generate --out data/line

`LABEL_NAMES` maps the label strings ("0" = good, "1".."5" defects) to names for the sidecar.
"""

from edge_runtime.synthetic.defects import DEFECT_LABELS, GOOD, LABEL_NAMES

__all__ = ["DEFECT_LABELS", "GOOD", "LABEL_NAMES"]
