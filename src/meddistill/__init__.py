"""meddistill: condense a medical image dataset into a few synthetic images per class."""

__version__ = "0.1.0"
