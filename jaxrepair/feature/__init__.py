"""Feature-level causal repair: counterfactual augmentation / logit pairing, IRM, de-confounded
training with TDE (tabular and small models from scratch; IRM and counterfactual fine-tuning of a
whole trained network). Attribution of input features, SCM counterfactuals and interchange interventions
live in :mod:`jaxrepair.causal`."""

from jaxrepair.feature import _methods  # noqa: F401  (registers cf-clp, cf-augment and irm in jr.repair.METHODS)
from jaxrepair.feature._counterfactual import counterfactual_pairs, counterfactual_training
from jaxrepair.feature._irm import accuracy, colored_digits, irm_benchmark, train_irm
from jaxrepair.feature._network import counterfactual_finetune, irm_finetune
from jaxrepair.feature._tde import Head, group_accuracy, long_tailed_digits, tde_benchmark
from jaxrepair.feature._tde import logits as tde_logits
from jaxrepair.feature._tde import train as train_tde

__all__ = [
    "Head", "accuracy", "colored_digits", "counterfactual_finetune", "counterfactual_pairs", "counterfactual_training",
    "group_accuracy", "irm_benchmark", "irm_finetune", "long_tailed_digits", "tde_benchmark", "tde_logits", "train_irm", "train_tde",
]
