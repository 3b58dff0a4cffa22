"""How a model's NG parts are named and how many are called NOVEL, per label folder.

    python -m train.novel_rate MODEL_DIR DATA_DIR/test

Judges every image of each `<label>/` folder with the edge runtime (exactly what `twinspect run`
records) and prints the verdict counts, the NOVEL share of the rejected parts and which known
type they were named after. With a model trained `--holdout-defect L`, the held-out folder shows
how often a kind never shown is flagged NOVEL; the other folders, how often a known kind is.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

from edge_runtime.datasets import image_files, read_image_file
from edge_runtime.inspector import Inspector
from edge_runtime.model import load_model_dir


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    insp = Inspector(load_model_dir(argv[0]))
    print("| folder | OK | NG | NOVEL | ERROR | NOVEL of rejected | named as |")
    print("|---|---|---|---|---|---|---|")
    for sub in sorted(p for p in Path(argv[1]).iterdir() if p.is_dir()):
        verdicts, named = collections.Counter(), collections.Counter()
        for f in image_files(sub):
            j = insp.inspect(read_image_file(f))
            verdicts[j.verdict] += 1
            if j.nearest:
                named[j.nearest] += 1
        rejected = verdicts["NG"] + verdicts["NOVEL"]
        share = f"{verdicts['NOVEL']}/{rejected}" if rejected else "—"
        names = ", ".join(f"{k} {v}" for k, v in named.most_common())
        print(
            f"| {sub.name} | {verdicts['OK']} | {verdicts['NG']} | {verdicts['NOVEL']} | "
            f"{verdicts['ERROR']} | {share} | {names} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
