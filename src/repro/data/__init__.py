"""Images for one training job: scikit-learn's digits, a user's image folder or synthetic images.

Every source ends as a list of labelled images, split 70/30 (stratified, seeded) and served by two
DataLoaders; only the training set gets the study's augmentation. A data set whose decoded pixels fit
under `dataset.memory_limit_mb` is decoded once and held as one uint8 tensor; a larger one is decoded
per batch, in DataLoader workers. Either way a batch is made on tensors: augmentation per image
(torchvision.transforms.v2), then conversion and preprocessing for the whole batch.
`validate_dataset` runs the cheap checks a sweep needs before any job starts; `build_data` builds one
job's loaders.

Modules: `build` (the two entry points), one module per source (`digits`, `imagefolder`,
`synthetic`), and the shared machinery: `split`, `loaders`, `files`, `transforms`.
"""

from repro.data.build import DataBundle, build_data, validate_dataset
from repro.data.loaders import default_workers
from repro.data.transforms import PREPROCESSING, check_preprocessing, preprocess

__all__ = [
    "PREPROCESSING",
    "DataBundle",
    "build_data",
    "check_preprocessing",
    "default_workers",
    "preprocess",
    "validate_dataset",
]
