"""The ACAS Xu repair suite (VeRe's 36 tasks) with certified repair: writes
``experiments/results/suite_acasxu.{json,md}``.

Runs ``jaxrepair suite acasxu`` (:func:`jaxrepair.suite.acasxu`) into a work directory whose SQLite
store makes it resumable — rerun the same command after a stop and only the missing tasks run —
then copies the JSON and the markdown table next to the other results::

    nice -n 10 python experiments/suite_acasxu.py [--timeout 90] [--tasks N2,1-phi2 ...] [--work DIR]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from jaxrepair import suite


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--timeout", type=float, default=90.0, help="seconds per task (the whole task)")
    p.add_argument("--tasks", nargs="+", help="only these tasks (default: all 36)")
    p.add_argument("--work", default=str(Path(__file__).parent / "results" / "suite_acasxu_work"),
                   help="the store and its tables (kept between runs: that is what makes a rerun resume)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--note", default="", help="a paragraph for the table: how the run was made")
    a = p.parse_args(argv)
    res = suite.acasxu(a.work, tasks=a.tasks, budget=a.timeout, note=a.note)
    out = Path(a.out)
    for f in ("json", "markdown"):
        shutil.copyfile(res["files"][f], out / Path(res["files"][f]).name)
    print(Path(res["files"]["markdown"]).read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
