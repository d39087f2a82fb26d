from ablate.data.datamodule import DataModule
from ablate.data.imagefolder import ImageFolderDataModule
from ablate.data.loader import InMemoryLoader
from ablate.data.sources import RawDataset, make_synthetic

__all__ = ["DataModule", "ImageFolderDataModule", "InMemoryLoader", "RawDataset", "make_synthetic"]
