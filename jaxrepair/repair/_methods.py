"""The method registry: every repair method by name, with one call signature.

``jr.repair.METHODS`` maps a name to a :class:`Method`: ``method(model, task, seed=..., **options)``
returns a :class:`RepairResult` (test-split report, select-split choices). Each method says which
task kinds it applies to, which preset it starts from, which paper it follows, how it ranks units
(``ace``, ``interchange``, ``random`` or none) and — for a causal localiser — which method is its
random-ranking control (same k, budget and steps; only the ranking differs). The suite
(:mod:`jaxrepair.suite`), the CLI and the experiment scripts look methods up here and nowhere
else; a user's own method joins them with :func:`register`::

    >>> import jaxrepair as jr
    >>> def mine(model, task, *, seed=0, localization=None, steps=100):
    ...     return jr.repair.finetune(model, task, steps=steps)
    >>> jr.repair.register(jr.repair.Method("my-finetune", mine, kinds=("fairness",), paper="",
    ...                                     summary="fine-tuning, 100 steps", options=("steps",)))  # doctest: +SKIP

Feature-level methods (counterfactual logit pairing and augmentation, IRM) register themselves from
:mod:`jaxrepair.feature`, which depends on this package.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax

from jaxrepair.repair._plan import localize, random_selection
from jaxrepair.repair._presets import preset_for
from jaxrepair.repair._problem import candidate_sites
from jaxrepair.repair._result import RepairResult
from jaxrepair.repair._task import Task
from jaxrepair.records import did_you_mean

#: Every task kind a method may name.
KINDS = ("fairness", "backdoor", "safety", "spurious", "custom")
RANKINGS = ("ace", "interchange", "random", None)

CARE = "Sun, Sun, Pham, Shi: Causality-Based Neural Network Repair, ICSE 2022 (code: longph1989/Socrates)"
CCBR = "counterfactual tracing (interchange interventions, Geiger et al. 2021) as CCBR localises, with jaxrepair's search"
CCBR_NSGA = ("CCBR as the causal-repair literature describes it (counterfactual tracing + NSGA-III); its paper text "
             "and code were not found, so every setting is inferred (README, \"The ccbr preset\")")
NSGA2 = "Deb, Pratap, Agarwal, Meyarivan: NSGA-II, IEEE TEVC 2002 (pymoo's operators)"
NSGA3 = "Deb & Jain: NSGA-III, IEEE TEVC 2014 (pymoo's operators)"
LOCALISED_FT = "localised fine-tuning (jaxrepair; the model-editing locality question of Hase et al., NeurIPS 2023)"


@dataclasses.dataclass(frozen=True)
class Method:
    """One repair method.

    Attributes:
      name: the registry key (``jaxrepair suite ... --methods NAME``).
      run: ``run(model, task, *, seed, localization=None, **options) -> RepairResult``.
      kinds: the task kinds it applies to.
      paper: where the method comes from ("" for jaxrepair's own).
      summary: one line on what it does.
      preset: the preset it starts from (``None``: the task kind's).
      ranking: how it chooses units — ``"ace"`` (it takes the shared ACE localisation of the task's
        effect, post-activation sites, as ``localization=``), ``"interchange"`` (an interchange
        localisation, likewise), ``"random"`` or ``None``.
      control: for a causal localiser, the name of the method that differs only by a random ranking.
      options: the overrides ``run`` accepts besides ``seed`` and ``localization``.
      props: ``None`` for any property, or the property class names it needs (certified repair: the
        verifier's).
      level: ``"neuron"`` (it changes units or weights of the network it is given: a suite may hand
        it the head past a cut, :func:`jaxrepair.repair.lower`) or ``"feature"`` (it retrains the
        whole network on changed inputs, so it needs the inputs themselves).
      front: ``front(model, task, *, a_values, seeds, localization, progress, **options) ->
        (points, info)``: the method's accuracy/violation trade-off for :func:`jaxrepair.repair.pareto`
        (``None``: the method makes one repair).
    """

    name: str
    run: Callable
    kinds: tuple
    paper: str
    summary: str
    preset: str | None = None
    ranking: str | None = None
    control: str | None = None
    options: tuple = ()
    props: tuple | None = None
    level: str = "neuron"
    front: Callable | None = None

    def __post_init__(self):
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise ValueError(f"method {self.name!r}: kinds must be some of {KINDS}, got {self.kinds!r}")
        if self.ranking not in RANKINGS:
            raise ValueError(f"method {self.name!r}: ranking must be one of {RANKINGS}, got {self.ranking!r}")
        if self.level not in ("neuron", "feature"):
            raise ValueError(f"method {self.name!r}: level must be 'neuron' or 'feature', got {self.level!r}")

    def applies(self, task: Task) -> str | None:
        """``None`` if the method applies to ``task``, else why not."""
        if task.kind not in self.kinds:
            return f"method {self.name!r} applies to {', '.join(self.kinds)} tasks, not {task.name!r} ({task.kind})"
        if self.props is not None and type(task.objective.prop).__name__ not in self.props:
            return (f"method {self.name!r} needs a {' or '.join(self.props)} property; task {task.name!r} has "
                    f"{type(task.objective.prop).__name__}")
        return None

    def check(self, task: Task, options: dict) -> None:
        """Raises ``ValueError`` naming the problem when the method cannot run on ``task`` with ``options``."""
        why = self.applies(task)
        if why:
            raise ValueError(why)
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"method {self.name!r} takes no option(s) {unknown}; it takes {sorted(self.options) or 'none'}")

    def shared_localization(self, *, ace=None, interchange=None):
        """What a caller holding shared localisations passes as ``localization=``: the ACE one to an
        ACE-ranked method, the interchange one to an interchange-ranked method, ``None`` to the rest
        (``care`` localises with CARE's own effect on its own sites)."""
        return {"ace": ace, "interchange": interchange}.get(self.ranking)

    def __call__(self, model, task: Task, *, seed: int = 0, localization=None, **options) -> RepairResult:
        self.check(task, options)
        # a ranking method takes its localisation from the caller (shared between methods); another
        # method only where it lists it as an option (care on a task whose effect is CARE's own)
        kw = {"localization": localization} if self.ranking in ("ace", "interchange") or (
            localization is not None and "localization" in self.options) else {}
        result = self.run(model, task, seed=int(seed), **kw, **options)
        return dataclasses.replace(result, method=self.name, config={**result.config, "registry_method": self.name,
                                                                      "seed": int(seed)})

    def to_json(self) -> dict:
        return {"name": self.name, "kinds": list(self.kinds), "paper": self.paper, "summary": self.summary,
                "preset": self.preset, "ranking": self.ranking, "control": self.control, "options": list(self.options),
                "level": self.level, "front": self.front is not None}


#: name -> :class:`Method`. Add to it with :func:`register`.
METHODS: dict[str, Method] = {}


def register(method: Method, *, replace: bool = False) -> Method:
    """Adds ``method`` to :data:`METHODS` (``replace=True`` to redefine a name)."""
    if not isinstance(method, Method):
        raise TypeError(f"register takes a jr.repair.Method, got {type(method).__name__}")
    if method.name in METHODS and not replace:
        raise ValueError(f"a method named {method.name!r} is registered already (replace=True redefines it)")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method ``name``; a clear error listing the names otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}{did_you_mean(name, METHODS)} (registered: {', '.join(sorted(METHODS))})")
    return METHODS[name]


def methods_for(task_or_kind) -> list[str]:
    """Names of the registered methods that apply to a task (or a task kind), in registry order."""
    if isinstance(task_or_kind, str):
        return [n for n, m in METHODS.items() if task_or_kind in m.kinds]
    return [n for n, m in METHODS.items() if m.applies(task_or_kind) is None]


# --------------------------------------------------------------------------- the built-in methods

_SEARCH = ("k", "generations", "population_size", "a", "max_drop", "bounds", "space", "sites", "progress")
_MOO = _SEARCH + ("objectives",)
_FINETUNE = ("k_values", "a", "max_drop", "steps", "learning_rate", "eval_every", "preserve", "sites")


def _search_method(strategy: str | None, selection=None, localizer: str | None = None, preset: str | None = None):
    """``(run, front)`` of a search method: :func:`repair` and :func:`search_front` with its settings."""
    extra = {"strategy": strategy} if strategy else {}

    def run(model, task, *, seed, localization=None, **options):
        from jaxrepair.repair._repair import repair

        return repair(model, task, preset=preset, seed=seed, selection=selection, localizer=localizer,
                      localization=localization, **extra, **options)

    def front(model, task, *, a_values, seeds, localization=None, progress=False, **options):
        from jaxrepair.repair._repair import search_front

        return search_front(model, task, a_values=a_values, seeds=seeds, localization=localization, progress=progress,
                            preset=preset, selection=selection, localizer=localizer, **extra, **options)

    return run, front


def _ace_ranking(model, task, localization):
    return (localization or localize(model, task)).ranking()


def _prune(model, task, *, seed, localization=None, k=None):
    from jaxrepair.repair._repair import prune

    return prune(model, task, _ace_ranking(model, task, localization)[: k or preset_for(task.kind).k])


def _finetune_all(model, task, *, seed, **options):
    from jaxrepair.repair._repair import finetune

    p = preset_for(task.kind)
    options = {"a": p.a_grad, "max_drop": p.max_drop, **options}
    return finetune(model, task, **options)


def _finetune_all_front(model, task, *, a_values, seeds, localization=None, progress=False, **options):
    from jaxrepair.repair._repair import finetune_front

    options.pop("a", None)
    return finetune_front(model, task, [None] * len(seeds), a_values=a_values, seeds=seeds, **options)


def _localised_finetune(ranking: str):
    """``(run, front)`` of localised fine-tuning on the ``ranking`` (``ace``, ``interchange``, ``random``)."""
    def located(model, task, localization, sites):
        """The localisation the ranking reads (None for random), computed once when not given."""
        if ranking == "random" or localization is not None:
            return localization
        from jaxrepair.repair._plan import localize_interchange

        return localize(model, task) if ranking == "ace" else localize_interchange(
            model, task, sites=list(sites) if sites is not None else candidate_sites(model))

    def order(model, seed, localization, sites):
        """The units in the order fine-tuning takes its top-k from (``localization`` from :func:`located`)."""
        sites = list(sites) if sites is not None else candidate_sites(model)
        if ranking == "random":  # every candidate unit in a random order: its top-k is k random units for every k
            return random_selection(model, sites, None, jax.random.key(seed + 7))
        ranked = localization.ranking("restored") if ranking == "interchange" else localization.ranking()
        return [n for n in ranked if n.site in sites]

    def run(model, task, *, seed, localization=None, sites=None, **options):
        from jaxrepair.repair._repair import localized_finetune

        localization = located(model, task, localization, sites)  # kept on the result: its ranking is written and drawn
        r = localized_finetune(model, task, order(model, seed, localization, sites), **options)
        if localization is not None:
            r.localization = localization
        return r

    def front(model, task, *, a_values, seeds, localization=None, progress=False, sites=None, **options):
        from jaxrepair.repair._repair import finetune_front

        options.pop("a", None)  # a front spans the a values
        localization = located(model, task, localization, sites)  # one localisation for every seed
        orders = [order(model, int(s), localization, sites) for s in seeds]
        return finetune_front(model, task, orders, a_values=a_values, seeds=seeds, **options)

    return run, front


def _certified(model, task, *, seed, localization=None, **options):
    from jaxrepair.repair._repair import repair

    return repair(model, task, seed=seed, certify=True, localization=localization, **options)


def _with_front(name, fns, *args, **kw) -> Method:
    run, front = fns
    return Method(name, run, *args, front=front, **kw)


_ALL = KINDS
_PAIRS = ("fairness", "backdoor", "spurious")  # tasks with counterfactual pairs (interchange, CARE's effects)

for _m in (
    _with_front("care", _search_method(None, preset="care"), ("fairness", "backdoor", "spurious"), CARE,
                "CARE's preset: ACE of pre-activation units on CARE's effect, pyswarms PSO over 13 factors", preset="care",
                ranking=None, options=("k", "generations", "population_size", "a", "max_drop", "sites",
                                       "localization", "progress")),
    _with_front("ace-pso", _search_method("pso"), _ALL, CARE + "; jaxrepair's preset",
                "the task kind's preset: ACE top-k, evosax PSO over factors, accuracy budget", ranking="ace",
                control="random-pso", options=_SEARCH),
    _with_front("random-pso", _search_method("pso", selection="random"), _ALL, "",
                "the control of ace-pso: k random units, the same PSO and budget", ranking="random", options=_SEARCH),
    *(_with_front(f"ace-{s}", _search_method(s), _ALL, "evosax " + s.upper().replace("_", "-"),
                  f"ace-pso with evosax's {s} instead of PSO", ranking="ace", options=_SEARCH)
      for s in ("cma_es", "de", "snes", "open_es")),
    _with_front("interchange-pso", _search_method("pso", localizer="interchange"), _PAIRS, CCBR,
                "top-k units by interchange interventions on counterfactual pairs, then the preset's PSO",
                ranking="interchange", control="random-pso", options=_SEARCH),
    _with_front("nsga2", _search_method("nsga2"), _ALL, NSGA2,
                "ACE top-k, NSGA-II over factors: violation and accuracy loss, the budget as a constraint; the point "
                "chosen on select", ranking="ace", options=_MOO),
    _with_front("nsga3", _search_method("nsga3"), _ALL, NSGA3,
                "ACE top-k, NSGA-III (Das-Dennis directions) over factors; otherwise as nsga2", ranking="ace", options=_MOO),
    _with_front("ccbr", _search_method(None, preset="ccbr"), _PAIRS, CCBR_NSGA,
                "the ccbr preset: top-k by interchange interventions, NSGA-III over their factors", preset="ccbr",
                ranking="interchange", control="random-ccbr", options=_MOO),
    _with_front("random-ccbr", _search_method(None, selection="random", preset="ccbr"), _PAIRS, "",
                "the control of ccbr: k random units, the same NSGA-III and budget", preset="ccbr", ranking="random",
                options=_MOO),
    Method("prune", _prune, _ALL, "pruning baseline (CARE's comparison)", "zero the ACE top-k units", ranking="ace",
           options=("k",)),
    Method("finetune-all", _finetune_all, _ALL, "fine-tuning baseline",
           "optax Adam on every weight: the objective's surrogate, checkpoint chosen on select", front=_finetune_all_front,
           options=("a", "max_drop", "steps", "learning_rate", "eval_every", "preserve")),
    _with_front("ace-finetune", _localised_finetune("ace"), _ALL, LOCALISED_FT,
                "fine-tune only the weights of the ACE top-k units (k from the preset's grid, chosen on select)",
                ranking="ace", control="random-finetune", options=_FINETUNE),
    _with_front("random-finetune", _localised_finetune("random"), _ALL, LOCALISED_FT,
                "the control of ace-finetune: the same k grid, steps and budget on a random ranking", ranking="random",
                options=_FINETUNE),
    _with_front("interchange-finetune", _localised_finetune("interchange"), _PAIRS, CCBR,
                "localised fine-tuning on the interchange-intervention ranking", ranking="interchange",
                control="random-finetune", options=_FINETUNE),
    Method("certified", _certified, ("safety", "custom"),
           "repair ⇄ verify (VeRe / PRDNN-style goal: a proof), jaxrepair's branch and bound and bound training",
           "the preset's repair, verified, repeated on counterexamples and trained on bounds until proven",
           ranking="ace", options=("k", "generations", "population_size", "a", "max_drop", "certify_rounds",
                                   "verify_timeout", "certify_bound_steps", "progress"), props=("Safety", "Vnnlib")),
):
    register(_m)
del _m
