"""Copies the reference data from ../shared/data into jaxrepair/data/bundled (xz-compressed).

A development tool: run once when the bundled files change. The package never reads ../shared.
"""

import lzma
import pathlib
import shutil

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
SRC = ROOT.parent / "shared" / "data"
DST = ROOT / "jaxrepair" / "data" / "bundled"


def xz(src: pathlib.Path, dst: pathlib.Path) -> None:
    with open(src, "rb") as f, lzma.open(dst, "wb", preset=9 | lzma.PRESET_EXTREME) as g:
        shutil.copyfileobj(f, g)


def main() -> None:
    DST.mkdir(parents=True, exist_ok=True)
    for name in ["adult.data", "adult.test", "bank-full.csv", "german.data", "compas-scores-two-years.csv"]:
        xz(SRC / "uci" / name, DST / f"{name}.xz")
    (DST / "acasxu").mkdir(exist_ok=True)
    for f in sorted((SRC / "acasxu").glob("*.nnet")):
        xz(f, DST / "acasxu" / f"{f.name}.xz")
    from sklearn.datasets import load_digits  # scikit-learn ships this file; no download

    d = load_digits()
    np.savez_compressed(DST / "digits.npz", images=d.images.astype(np.uint8), target=d.target.astype(np.uint8))


if __name__ == "__main__":
    main()
