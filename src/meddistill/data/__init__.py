"""Datasets: MedMNIST npz files, image folders, and the in-memory tensor dataset they become."""

from meddistill.data.batches import iter_batches
from meddistill.data.cache import cache_dir
from meddistill.data.dataset import MedicalDataset, Normalization, Split
from meddistill.data.folder import load_image_folder
from meddistill.data.medmnist import load_medmnist, medmnist_names
from meddistill.data.registry import (
    dataset_names,
    default_dsa_strategy,
    describe_known,
    load_dataset,
)

__all__ = [
    "MedicalDataset",
    "Normalization",
    "Split",
    "cache_dir",
    "dataset_names",
    "default_dsa_strategy",
    "describe_known",
    "iter_batches",
    "load_dataset",
    "load_image_folder",
    "load_medmnist",
    "medmnist_names",
]
