"""Datasets for ssl_ft: MedMNIST names, MedMNIST-layout ``.npz`` files and folders of images.

One call gives train/val/test arrays plus a description of them::

    from ssl_ft.data import load_data

    splits = load_data("pneumoniamnist", label_fraction=0.1, seed=1)
    splits.info.num_classes, splits.info.mean          # 2, (0.57...,)
    train = splits.dataset("train", transform=my_augment)  # torch Dataset, normalised

See :mod:`ssl_ft.data.load` for what ``DATA`` may be and how the data root is found,
:mod:`ssl_ft.data.folder` for the image-folder rules (layouts, DICOM/NIfTI/16-bit intensity
handling) and :mod:`ssl_ft.data.subsample` for the seeded stratified subsets and splits.
"""

from ssl_ft.data.arrays import SPLITS, ArraySplits, DataInfo, ImageArrayDataset
from ssl_ft.data.load import (
    DATA_ROOT_ENV,
    DEFAULT_DATA_ROOT,
    list_datasets,
    load_data,
    locate_data,
    resolve_data_root,
)
from ssl_ft.data.subsample import split_stratified, subsample

__all__ = [
    "DATA_ROOT_ENV",
    "DEFAULT_DATA_ROOT",
    "SPLITS",
    "ArraySplits",
    "DataInfo",
    "ImageArrayDataset",
    "list_datasets",
    "load_data",
    "locate_data",
    "resolve_data_root",
    "split_stratified",
    "subsample",
]
