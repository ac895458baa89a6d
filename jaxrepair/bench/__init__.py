"""Benchmark scripts (``jaxrepair bench ...``): timings and ratios measured in one run.

:func:`care_task` builds CARE's census repair task from its reference files
(:func:`jaxrepair.data.load_care_census`), as ``jaxrepair bench cold --care-dir DIR`` runs it.
"""

from jaxrepair.bench._cold import REFERENCE as CARE_REFERENCE, care_task

__all__ = ["CARE_REFERENCE", "care_task"]
