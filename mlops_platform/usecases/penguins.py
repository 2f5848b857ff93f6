"""The penguins use case's own logic: where its data comes from and how its gold table is assembled.

A snapshot use case: the Palmer Station penguin measurements (the ``palmerpenguins`` package ships them) arrive as a
full export, with no dates. Everything else is configuration in ``config/usecases/penguins.yaml``.
"""

from __future__ import annotations

from collections.abc import Mapping

import narwhals as nw
import polars as pl


def source_data() -> dict[str, pl.DataFrame]:
    """The 344 penguins of the Palmer Archipelago (2007-2009); ``penguin_id`` numbers them in the published order,
    the natural key the export lacks."""
    from palmerpenguins import load_penguins

    penguins = pl.from_pandas(load_penguins())
    return {"penguins": penguins.with_row_index("penguin_id", offset=1).with_columns(pl.col("penguin_id").cast(pl.Int64))}


def build_gold_penguins(tables: Mapping[str, nw.LazyFrame]) -> nw.LazyFrame:
    """One row per penguin with its measurements and, where recorded, its sex (the label)."""
    return tables["penguins"].select(
        "penguin_id", "species", "island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g",
        "sex", "year",
    )
