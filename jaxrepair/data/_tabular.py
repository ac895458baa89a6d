"""The tabular fairness benchmarks, bundled: Census Income (Adult), Bank Marketing, German Credit,
COMPAS. Deterministic preprocessing to numeric features:

* categorical columns → integer codes (index in the sorted list of the values seen in the file;
  a missing ``?`` is a value of its own);
* numeric columns → their raw value;
* **age** → a bucket ``clip(age // 10, 1, 9)``: bucket ``k`` holds ages ``10k … 10k+9`` (bucket 1
  also holds ages under 20, bucket 9 ages 90 and over). Census, Bank, German and COMPAS all use it.

Splits are fixed: Census uses ``adult.data`` for train+validation (80/20) and ``adult.test`` as
test; the others are split 70/15/15. Every split comes from a permutation seeded with 0.
:func:`describe` prints the columns with their ranges and the sensitive attributes.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import lzma
from importlib import resources
from typing import NamedTuple

import numpy as np

DATASETS = ("census", "bank", "german", "compas")


class Split(NamedTuple):
    x: np.ndarray  # [N, F] float32
    y: np.ndarray  # [N] int32


@dataclasses.dataclass
class TabularDataset:
    name: str
    columns: list[str]
    categories: dict[str, list[str]]  # vocabulary of each categorical column (code = index)
    sensitive: dict[str, int]  # attribute -> column index
    splits: dict[str, Split]
    label: str
    rows: dict[str, np.ndarray] | None = None  # user tables: each split's row indices in the file (0-based data rows)
    dropped: list[int] = dataclasses.field(default_factory=list)  # user tables: file lines dropped for a missing cell
    split_seed: int = 0

    def split_record(self) -> dict:
        """Which rows of the file each split holds (a user table's; None for a bundled set), for the
        run folder: ``{"split_seed", "fractions", "rows": {split: [row, ...]}, "dropped_lines"}``."""
        if self.rows is None:
            return None
        return {"split_seed": self.split_seed, "fractions": {"train": 0.6, "val": 0.2, "test": 0.2},
                "rows": {k: v.tolist() for k, v in self.rows.items()}, "dropped_lines": list(self.dropped),
                "categorical": sorted(self.categories)}

    def sensitive_values(self, attribute: str) -> np.ndarray:
        """Every value the attribute takes in the data (its codes or buckets)."""
        if attribute not in self.sensitive:
            raise ValueError(f"{self.name} has sensitive attributes {sorted(self.sensitive)}, not {attribute!r}")
        col = self.sensitive[attribute]
        allx = np.concatenate([s.x[:, col] for s in self.splits.values()])
        return np.unique(allx)

    @property
    def num_features(self) -> int:
        return len(self.columns)

    def describe(self) -> str:
        lines = [f"{self.name}: {self.num_features} features, label {self.label!r}"]
        lines += [f"  split {k}: {len(v.y)} rows, positive rate {v.y.mean():.3f}" for k, v in self.splits.items()]
        allx = np.concatenate([s.x for s in self.splits.values()])
        for i, c in enumerate(self.columns):
            kind = f"categorical {len(self.categories[c])} codes" if c in self.categories else "numeric"
            sens = [a for a, j in self.sensitive.items() if j == i]
            tag = f"  <- sensitive: {', '.join(sens)}" if sens else ""
            lines.append(f"  [{i:2d}] {c:22s} {kind:26s} range [{allx[:, i].min():g}, {allx[:, i].max():g}]{tag}")
        return "\n".join(lines)


def check_class_indices(y, what: str) -> np.ndarray:
    """``y`` as float64 after checking it holds class indices 0, 1, ... (finite, whole, not negative);
    ``what`` names the labels in the error (``"FILE: the label 'y'"``)."""
    yf = np.asarray(y, np.float64).reshape(-1)
    if yf.size and (not np.all(np.isfinite(yf)) or np.any(yf != np.round(yf)) or yf.min() < 0):
        raise ValueError(f"{what} must hold class indices 0, 1, ...; got values such as {np.unique(yf)[:5].tolist()}")
    return yf


def _read(name: str) -> str:
    path = resources.files("jaxrepair.data") / "bundled" / f"{name}.xz"
    with lzma.open(io.BytesIO(path.read_bytes())) as f:
        return f.read().decode("utf-8")


def age_bucket(age) -> np.ndarray:
    return np.clip(np.asarray(age, np.float64) // 10, 1, 9)


def _encode(rows: list[dict], spec: list[tuple[str, str]]):
    """spec: (column, kind) with kind in {'cat', 'num', 'age'}; returns X and the vocabularies."""
    cats = {c: sorted({r[c] for r in rows}) for c, k in spec if k == "cat"}
    cols = []
    for c, k in spec:
        if k == "cat":
            index = {v: i for i, v in enumerate(cats[c])}
            cols.append([index[r[c]] for r in rows])
        elif k == "age":
            cols.append(age_bucket([float(r[c]) for r in rows]))
        else:
            cols.append([float(r[c]) for r in rows])
    return np.stack([np.asarray(c, np.float32) for c in cols], axis=1), cats


def _split(x, y, fractions=(0.7, 0.15)) -> dict[str, Split]:
    perm = np.random.default_rng(0).permutation(len(y))
    a = int(round(fractions[0] * len(y)))
    b = a + int(round(fractions[1] * len(y)))
    parts = {"train": perm[:a], "val": perm[a:b], "test": perm[b:]}
    return {k: Split(x[v], y[v].astype(np.int32)) for k, v in parts.items()}


_ADULT = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
          "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country", "income"]
_CENSUS_SPEC = [("age", "age"), ("workclass", "cat"), ("education", "cat"), ("education_num", "num"),
                ("marital_status", "cat"), ("occupation", "cat"), ("relationship", "cat"), ("race", "cat"),
                ("sex", "cat"), ("capital_gain", "num"), ("capital_loss", "num"), ("hours_per_week", "num"),
                ("native_country", "cat")]


def load_census() -> TabularDataset:
    """UCI Adult: 13 features (fnlwgt dropped), label income > 50K. Sensitive: age (col 0, bucket),
    race (col 7, 5 codes), sex (col 8: 0 Female, 1 Male)."""
    rows = []
    for part in ("adult.data", "adult.test"):
        for line in _read(part).splitlines():
            vals = [v.strip() for v in line.split(",")]
            if len(vals) != len(_ADULT):
                continue  # blank lines and the test file's header
            r = dict(zip(_ADULT, vals))
            r["income"] = r["income"].rstrip(".")
            r["_part"] = part
            rows.append(r)
    x, cats = _encode(rows, _CENSUS_SPEC)
    y = np.array([r["income"] == ">50K" for r in rows], np.int32)
    is_test = np.array([r["_part"] == "adult.test" for r in rows])
    trval = _split(x[~is_test], y[~is_test], (0.8, 0.2))
    splits = {"train": trval["train"], "val": trval["val"], "test": Split(x[is_test], y[is_test])}
    cols = [c for c, _ in _CENSUS_SPEC]
    return TabularDataset("census", cols, cats, {"age": 0, "race": 7, "sex": 8}, splits, "income>50K")


_BANK_SPEC = [("age", "age"), ("job", "cat"), ("marital", "cat"), ("education", "cat"), ("default", "cat"),
              ("balance", "num"), ("housing", "cat"), ("loan", "cat"), ("contact", "cat"), ("day", "num"),
              ("month", "cat"), ("duration", "num"), ("campaign", "num"), ("pdays", "num"), ("previous", "num"),
              ("poutcome", "cat")]


def load_bank() -> TabularDataset:
    """Bank Marketing (bank-full): 16 features, label subscribed (y = yes). Sensitive: age (col 0, bucket)."""
    rows = list(csv.DictReader(io.StringIO(_read("bank-full.csv"))))
    x, cats = _encode(rows, _BANK_SPEC)
    y = np.array([r["y"] == "yes" for r in rows], np.int32)
    return TabularDataset("bank", [c for c, _ in _BANK_SPEC], cats, {"age": 0}, _split(x, y), "subscribed")


_GERMAN = ["checking", "duration", "credit_history", "purpose", "credit_amount", "savings", "employment",
           "installment_rate", "sex", "other_debtors", "residence_since", "property", "age", "other_plans",
           "housing", "existing_credits", "job", "dependents", "telephone", "foreign_worker"]
_GERMAN_NUM = {"duration", "credit_amount", "installment_rate", "residence_since", "existing_credits", "dependents"}


def load_german() -> TabularDataset:
    """Statlog German Credit: 20 features, label good credit (1). Attribute 9 (personal status and sex)
    becomes ``sex`` (col 8: 0 female = A92/A95, 1 male = A91/A93/A94); age (col 12) is bucketed."""
    rows = []
    for line in _read("german.data").splitlines():
        vals = line.split()
        if len(vals) != 21:
            continue
        r = dict(zip(_GERMAN + ["label"], vals))
        r["sex"] = "0" if r["sex"] in ("A92", "A95") else "1"
        rows.append(r)
    spec = [(c, "age" if c == "age" else "num" if c in _GERMAN_NUM or c == "sex" else "cat") for c in _GERMAN]
    x, cats = _encode(rows, spec)
    y = np.array([r["label"] == "1" for r in rows], np.int32)
    return TabularDataset("german", list(_GERMAN), cats, {"sex": 8, "age": 12}, _split(x, y), "good_credit")


_COMPAS_SPEC = [("sex", "cat"), ("age", "age"), ("race", "cat"), ("juv_fel_count", "num"), ("juv_misd_count", "num"),
                ("juv_other_count", "num"), ("priors_count", "num"), ("c_charge_degree", "cat")]


def load_compas() -> TabularDataset:
    """ProPublica COMPAS, with ProPublica's filters (|days_b_screening_arrest| ≤ 30, is_recid ≠ −1,
    charge degree ≠ 'O', score text ≠ 'N/A'): 8 features, label two-year recidivism.
    Sensitive: sex (col 0: 0 Female, 1 Male), race (col 2, 6 codes)."""
    rows = [
        r for r in csv.DictReader(io.StringIO(_read("compas-scores-two-years.csv")))
        if r["days_b_screening_arrest"] not in ("",) and abs(int(r["days_b_screening_arrest"])) <= 30
        and r["is_recid"] != "-1" and r["c_charge_degree"] != "O" and r["score_text"] != "N/A"
    ]
    x, cats = _encode(rows, _COMPAS_SPEC)
    y = np.array([r["two_year_recid"] == "1" for r in rows], np.int32)
    return TabularDataset("compas", [c for c, _ in _COMPAS_SPEC], cats, {"sex": 0, "race": 2}, _split(x, y), "two_year_recid")


_LOADERS = {"census": load_census, "bank": load_bank, "german": load_german, "compas": load_compas}
_CACHE: dict[str, TabularDataset] = {}


def load_tabular(name: str) -> TabularDataset:
    """Loads a bundled tabular data set by name (``census``, ``bank``, ``german``, ``compas``)."""
    if name not in _LOADERS:
        raise ValueError(f"unknown tabular data set {name!r}; bundled: {list(_LOADERS)}")
    if name not in _CACHE:
        _CACHE[name] = _LOADERS[name]()
    return _CACHE[name]
