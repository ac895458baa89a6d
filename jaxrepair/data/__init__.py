"""Data: bundled tabular fairness sets, image sets (digits; MNIST, Fashion-MNIST and GTSRB from the
user's data directory; IDX/npz/CIFAR loaders), triggers, a seeded synthetic token task with its trigger token, boxes, seeded image corruptions (shift,
rotation, noise, blur, contrast) for evaluating under a distribution shift.

Everything here is read from files shipped inside the package (``bundled/``, see PROVENANCE.md)
or from a path the user gives; nothing is downloaded.
"""

from jaxrepair.data._acasxu import ADVISORIES, load_acasxu
from jaxrepair.data._care import CareCensus, load_care_census
from jaxrepair.data._corrupt import (
    CORRUPTIONS, adjust_contrast, corrupt, corruption_level, gaussian_blur, gaussian_noise, rotate, translate,
)
from jaxrepair.data._image_sets import IMAGE_SETS, cache_root, check_files, data_dir, decode_gtsrb, load_image_set
from jaxrepair.data._images import Trigger, load_cifar_binary, load_digits, load_mnist_idx, load_npz, read_idx
from jaxrepair.data._tabular import DATASETS, Split, TabularDataset, age_bucket, load_tabular
from jaxrepair.data._spurious import PALETTE, ColourBorder, ColourPatch, other_colours, spurious_colours, spurious_splits, to_rgb32
from jaxrepair.data._tokens import TRIGGER_TOKEN, VOCAB, TokenTrigger, load_token_task
from jaxrepair.data._user import load_user_table, parse_sensitive

__all__ = ["IMAGE_SETS", "cache_root", "check_files", "data_dir", "decode_gtsrb", "load_image_set", "CareCensus", "load_care_census", "Trigger", "load_cifar_binary", "load_digits", "load_mnist_idx", "load_npz", "read_idx", "ADVISORIES", "load_acasxu", "DATASETS", "Split", "TabularDataset", "age_bucket", "load_tabular", "load_user_table",
           "parse_sensitive", "TRIGGER_TOKEN", "VOCAB", "TokenTrigger", "load_token_task", "PALETTE", "ColourBorder", "ColourPatch", "other_colours", "spurious_colours", "spurious_splits", "to_rgb32", "CORRUPTIONS", "adjust_contrast", "corrupt", "corruption_level", "gaussian_blur",
           "gaussian_noise", "rotate", "translate"]
