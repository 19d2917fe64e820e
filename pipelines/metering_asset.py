"""``metering``: each Asia/Shanghai day's usage records as a Parquet dataset in the catalogue.

One partition per day (a job counts in the day it *ended*, as ``westflow usage --by day`` and bills
count it). The day's records are read from the admission database (:class:`admission.metering.Meter`)
and written as dataset ``metering-<day>`` in the east bucket through the dataset catalogue
(:class:`storage.DatasetStore`: visible only once complete, so a rerun of a day replaces it whole).
The materialisation records the row count, accelerator-hours and CNY. Needs no Ray: only the
database and the object store.
"""

from collections.abc import Sequence
from dataclasses import astuple, fields
from datetime import datetime
from typing import Any, Final

import dagster as dg
import pyarrow as pa

from admission.metering import TZ, Meter, UsageRecord
from jobs.stores import DatasetStoreLike
from pipelines.resources import WestflowResource

__all__ = ["metering", "DAILY", "SCHEMA", "REGION", "ROWS", "ACCELERATOR_HOURS", "CNY", "DATASET",
           "dataset_name", "day_window", "metering_table", "write_day"]

DAILY: Final = dg.DailyPartitionsDefinition(start_date="2026-01-01", timezone="Asia/Shanghai")
REGION: Final = "east"  # where the operator's billing reads; the records are small
ROWS: Final = "dagster/row_count"
ACCELERATOR_HOURS: Final = "accelerator_hours"
CNY: Final = "cny"
DATASET: Final = "dataset"

_TYPES: Final = {"str": pa.string(), "str | None": pa.string(), "int": pa.int64(), "float": pa.float64()}
SCHEMA: Final = pa.schema([pa.field(f.name, _TYPES[str(f.type)], nullable="None" in str(f.type))
                           for f in fields(UsageRecord)])


def dataset_name(day: str) -> str:
    """The catalogue name of one day's records."""
    return f"metering-{day}"


def day_window(day: str) -> tuple[float, float]:
    """``[start, end)`` epoch seconds of Asia/Shanghai day ``YYYY-MM-DD``."""
    start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=TZ)
    return start.timestamp(), start.timestamp() + 86400.0


def metering_table(records: Sequence[UsageRecord]) -> pa.Table:
    """The records as one Arrow table (the columns are the record's fields, in order; nulls where None)."""
    columns = list(zip(*(astuple(r) for r in records), strict=True)) if records else [()] * len(SCHEMA)
    return pa.Table.from_arrays([pa.array(list(c), type=f.type) for c, f in zip(columns, SCHEMA, strict=True)],
                                schema=SCHEMA)


def write_day(store: DatasetStoreLike, day: str, records: Sequence[UsageRecord]) -> dict[str, Any]:
    """Write ``records`` as the day's dataset (atomically, through the catalogue); its materialisation metadata."""
    info = store.write(dataset_name(day), REGION, metering_table(records), schema=SCHEMA)
    return {ROWS: len(records),
            ACCELERATOR_HOURS: round(sum(r.accelerator_hours for r in records), 6),
            CNY: round(sum(r.cny + r.transfer_cny for r in records), 6),
            DATASET: f"{info.bucket}/{dataset_name(day)}"}


@dg.asset(partitions_def=DAILY, group_name="operations", kinds={"parquet", "sqlite"},
          description="Each Asia/Shanghai day's metered usage records (jobs that ended that day) as a Parquet "
                      "dataset in the catalogue; row count, accelerator-hours and CNY in the metadata.")
def metering(context: dg.AssetExecutionContext, westflow: WestflowResource) -> dg.MaterializeResult:
    from storage import DatasetStore, S3Config

    day = context.partition_key
    start, end = day_window(day)
    queue = westflow.queue()
    try:
        records = Meter(queue).records(start=start, end=end)
    finally:
        queue.close()
    meta = write_day(DatasetStore(S3Config.load(westflow.state_dir)), day, records)
    context.log.info(f"westflow: metering {day}: {meta[ROWS]} record(s), {meta[ACCELERATOR_HOURS]:.2f} "
                     f"accelerator-hours, {meta[CNY]:.2f} CNY -> {meta[DATASET]}")
    return dg.MaterializeResult(metadata=meta)
