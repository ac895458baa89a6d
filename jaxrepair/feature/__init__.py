"""Feature-level causal repair: counterfactual augmentation / logit pairing, IRM, de-confounded
training with TDE. Attribution of input features, SCM counterfactuals and interchange interventions
live in :mod:`jaxrepair.causal`."""

from jaxrepair.feature._counterfactual import counterfactual_pairs, counterfactual_training
from jaxrepair.feature._irm import accuracy, colored_digits, irm_benchmark, train_irm

__all__ = ["accuracy", "colored_digits", "counterfactual_pairs", "counterfactual_training", "irm_benchmark", "train_irm"]
