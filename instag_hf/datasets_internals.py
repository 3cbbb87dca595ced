"""The private parts of ``datasets`` that instag_hf needs, in one place.

``datasets`` has no public API for these; each is wrapped here, and only here, so a
``datasets`` release that renames one breaks this module and its test
(``tests/test_datasets_internals.py``), loudly, instead of a map or a push far away.

- :func:`fingerprint`: a dataset's cache fingerprint (``Dataset._fingerprint``), the key
  the selection record is kept under.
- :func:`estimated_nbytes`: the size ``Dataset.push_to_hub`` cuts shards by
  (``Dataset._estimate_nbytes``), so our push shards as ``datasets``' does.
- :func:`batch_table`: the Arrow table behind a ``LazyBatch`` (``LazyBatch.pa_table``), so a
  batch's column types are read without converting it to Python.
- :func:`dataset_from_table`: a ``Dataset`` over an in-memory Arrow table (``InMemoryTable``).
- :data:`MetadataConfigs`, :data:`DatasetInfosDict`, :func:`convert_file_size_to_int`: the
  README YAML's ``configs``/``dataset_info`` blocks and ``max_shard_size``, as ``datasets``
  reads and writes them (modules ``datasets`` does not export).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from datasets import Dataset
from datasets.info import DatasetInfosDict
from datasets.table import InMemoryTable
from datasets.utils.metadata import MetadataConfigs
from datasets.utils.py_utils import convert_file_size_to_int

__all__ = [
    "DatasetInfosDict",
    "MetadataConfigs",
    "batch_table",
    "convert_file_size_to_int",
    "dataset_from_table",
    "estimated_nbytes",
    "fingerprint",
]


def fingerprint(ds: Any) -> str | None:
    """The cache fingerprint of a ``datasets.Dataset``; None for anything else."""
    return getattr(ds, "_fingerprint", None)


def estimated_nbytes(ds: Dataset) -> int:
    """The bytes ``Dataset.push_to_hub`` counts to choose its number of shards."""
    return int(ds._estimate_nbytes())


def batch_table(batch: Any) -> pa.Table | None:
    """The Arrow table behind a batch ``Dataset.map`` passes (a ``LazyBatch``); None for a dict."""
    table = getattr(batch, "pa_table", None)
    return table if isinstance(table, pa.Table) else None


def dataset_from_table(table: pa.Table) -> Dataset:
    """A ``Dataset`` over ``table``, in memory, with no copy and its Arrow types kept."""
    return Dataset(InMemoryTable(table))
