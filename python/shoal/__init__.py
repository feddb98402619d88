"""Python access to a Shoal cluster cache through the local shoald's control socket, without FUSE.

    shoal.Client            the control protocol: stat, list, ranged get (shoal.client)
    shoal.filesystem        ShoalFileSystem, the fsspec filesystem of shoal://bucket/key (needs fsspec)
    shoal.dataset           ShoalDataset, a PyTorch map-style dataset over a prefix (needs torch)

docs/python.md in the Shoal repository documents the package.
"""

from .client import Client, ObjectChangedError, ShoalError, default_control_path

__all__ = ["Client", "ObjectChangedError", "ShoalError", "default_control_path"]
__version__ = "0.1.0"
