"""What a job makes beside the detections, one module per product behind one lifecycle (`Product`), and
the registry that turns a job's settings into its products (`products_for`).

The lifecycle, as the actor drives it: each image, once its faces are known and while its full-size pixels
are in memory, goes through every product in turn (`make`, in the actor's fetch pool); a product with a
side table then gives the shard's rows (`table`), written under OUTPUT before the shard's own file commits
them (the ledger drops a side file whose data file never committed; the compaction merges them with the
shards); an image any product fails on becomes an error row, and the products after it skip it.

A new product: a module here with a `Product`, its settings in `workers/config.py` (their fields, the
switch that turns it on), and one line in `products_for`.
"""

from __future__ import annotations

from facesweep.workers.config import AnonymizeSettings, CropSettings
from facesweep.workers.products.anonymize import AnonymizedCopies
from facesweep.workers.products.base import Detected, Product
from facesweep.workers.products.crops import FaceCrops

__all__ = ["Detected", "Product", "products_for"]


def products_for(anonymizer: AnonymizeSettings | None, crops: CropSettings | None) -> list[Product]:
    """The job's products, in the order they run on an image: crops before the copy, so an image that
    fails either writes no copy."""
    made: list[Product] = []
    if crops is not None:
        made.append(FaceCrops(crops))
    if anonymizer is not None:
        made.append(AnonymizedCopies(anonymizer))
    return made
