"""Repair suites: the field's benchmark families run end to end — entries × registered methods ×
seeds — resumable on the sweeps' store, with statistics (intervals, paired tests, causal vs random)
and leaderboards beside the published figures.

* :func:`run` — ``jaxrepair suite fairness | backdoor | spurious | safety``: every entry of the family
  × every applicable method of :data:`jaxrepair.repair.METHODS` × seeds (:mod:`._run`);
  :func:`report` rewrites the leaderboard from a store (:mod:`._report`, statistics in :mod:`._stats`).
* :func:`acasxu` — ``jaxrepair suite acasxu``: VeRe's 36 ACAS Xu certified-repair tasks (:mod:`._acasxu`).

Depends on :mod:`jaxrepair.repair`, :mod:`jaxrepair.zoo` and :mod:`jaxrepair.sweep` (the store).
"""

from jaxrepair.suite._acasxu import ANCHORS, GOAL, acasxu, machine, parse_task, summarise, table, task_hash
from jaxrepair.suite._report import leaderboard, report
from jaxrepair.suite._run import SMALL_TEST, SUITE_VERSION, Family, check_run, families, outcomes, resplit, run
from jaxrepair.suite._stats import cell_stats, compare, holm, paired, seed_interval, sign_flip_test

__all__ = ["ANCHORS", "GOAL", "Family", "SMALL_TEST", "SUITE_VERSION", "acasxu", "cell_stats", "check_run", "compare",
           "families", "holm", "leaderboard", "machine", "outcomes", "parse_task", "report", "resplit", "run",
           "paired", "seed_interval", "sign_flip_test", "summarise", "table", "task_hash"]
