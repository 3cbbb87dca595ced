"""The private ``datasets`` parts instag_hf wraps still behave as the wrappers say.

If a ``datasets`` release renames or changes one of them, this file fails, naming it, before
a map, a push or a card fails somewhere far from the cause.
"""

from __future__ import annotations

import datasets
import pyarrow as pa
from huggingface_hub import DatasetCardData

from instag_hf.datasets_internals import (
    DatasetInfosDict,
    MetadataConfigs,
    batch_table,
    convert_file_size_to_int,
    dataset_from_table,
    estimated_nbytes,
    fingerprint,
)


def test_fingerprint_is_the_cache_key_datasets_changes_with_each_transform():
    ds = datasets.Dataset.from_dict({"x": [1, 2, 3]})
    before = fingerprint(ds)
    assert isinstance(before, str) and before
    assert fingerprint(ds.select([0], new_fingerprint="chosen")) == "chosen"
    assert fingerprint({"x": [1]}) is None


def test_estimated_nbytes_is_what_push_to_hub_counts():
    ds = datasets.Dataset.from_dict({"text": ["a" * 1000] * 10})
    assert 10_000 <= estimated_nbytes(ds) < 20_000


def test_a_map_batch_carries_its_arrow_table():
    ds = datasets.Dataset.from_dict({"x": [1, 2, 3]})
    seen = []

    def look(batch):
        seen.append(batch_table(batch))
        return batch

    ds.map(look, batched=True)
    assert isinstance(seen[0], pa.Table) and seen[0].column_names == ["x"]
    assert batch_table({"x": [1]}) is None


def test_a_dataset_over_an_arrow_table_keeps_its_types():
    table = pa.table({"tags": pa.array([["a"], []], type=pa.list_(pa.string()))})
    ds = dataset_from_table(table)
    assert ds.data.table.schema == table.schema and ds["tags"] == [["a"], []]


def test_the_readme_yaml_blocks_round_trip():
    data = DatasetCardData()
    MetadataConfigs({"default": {"data_files": [{"split": "train", "path": "data/*.parquet"}]}}).to_dataset_card_data(
        data
    )
    assert MetadataConfigs.from_dataset_card_data(data)["default"]["data_files"][0]["split"] == "train"
    info = datasets.DatasetInfo(features=datasets.Features({"x": datasets.Value("int64")}))
    DatasetInfosDict({"default": info}).to_dataset_card_data(data)
    assert DatasetInfosDict.from_dataset_card_data(data)["default"].features == info.features
    assert convert_file_size_to_int("500MB") == 500 * 10**6
