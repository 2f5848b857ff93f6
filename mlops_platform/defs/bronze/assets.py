"""Bronze: every parseable landing row, as raw strings, with its source file, row number, batch and ingestion time.

Daily sources are partitioned by landing day; a run replaces its days, so re-ingesting a day never duplicates it.
Reference sources are replaced whole by their newest snapshot.
"""


import datetime as dt
from pathlib import Path

import dagster as dg
import pyarrow as pa

from mlops_platform import names
from mlops_platform.defs import stages
from mlops_platform.defs.quality import HAS_ROWS, check_spec, committed_rows, guard_replacement
from mlops_platform.defs.tables import days_of_run, partitioning, table_metadata
from mlops_platform.ingest import read_bronze_batch
from mlops_platform.landing import NAMING_CONVENTION, files_for_day, latest_snapshot, source_dir, unread_files
from mlops_platform.resources.engine import PolarsEngine
from mlops_platform.resources.landing_zone import LandingZone
from mlops_platform.resources.warehouse import DayRange, Warehouse
from mlops_platform.settings import SourceConfig, UseCaseConfig
from mlops_platform.transforms.conform import LANDING_DATE, conformed_tables


def _landing_files(landing: LandingZone, usecase: UseCaseConfig, name: str, spec: SourceConfig,
                   context: dg.AssetExecutionContext) -> list[tuple[Path, dt.date | None]]:
    if not spec.is_daily:
        snapshot = latest_snapshot(landing.path, usecase.name, name, spec)
        if snapshot is None:
            raise FileNotFoundError(
                f"no {name} snapshot in {source_dir(landing.path, usecase.name, name)}: land one with `mlops land`"
            )
        return [(snapshot, None)]
    days = days_of_run(context, LANDING_DATE)
    files, missing = [], []
    day = days.first
    while day <= days.last:
        found = files_for_day(landing.path, usecase.name, name, spec, day)
        files += [(path, day) for path in found]
        if not found:
            missing.append(day.isoformat())
        day += dt.timedelta(days=1)
    if missing:
        strays = [path.name for path in unread_files(landing.path, usecase.name, name, spec,
                                                     [dt.date.fromisoformat(day) for day in missing])]
        ignored = f" ({strays} are not read: they do not follow {NAMING_CONVENTION})" if strays else ""
        raise FileNotFoundError(
            f"no {name} file landed for {', '.join(missing)} in {source_dir(landing.path, usecase.name, name)}"
            f"{ignored}: land those days with `mlops land` first"
        )
    return files


def _guard(context: dg.AssetExecutionContext, usecase: UseCaseConfig, spec: SourceConfig, warehouse: Warehouse,
           table: names.TableName, days: DayRange | None, rows: pa.Table) -> None:
    """Refuse a batch that would replace days holding rows with far fewer rows or mostly quarantine.

    Decided here, before bronze moves, so a refused day leaves bronze, silver and gold as they were: the batch is
    conformed in memory as silver will conform it, to know its quarantine share.
    """
    quarantined, column = 0, LANDING_DATE if days else next(iter(spec.columns))
    if rows.num_rows and committed_rows(warehouse, table, days, columns=[column]).num_rows:
        engine = PolarsEngine()
        quarantined = conformed_tables(engine, engine.from_arrow(rows), spec).quarantine.num_rows
    guard_replacement(context, usecase.replace_guard, warehouse, table, days, new_rows=rows.num_rows,
                      quarantined=quarantined, count_column=column)


def _bronze_asset(usecase: UseCaseConfig, name: str, spec: SourceConfig) -> dg.AssetsDefinition:
    key = stages.source_key(usecase, names.BRONZE, name)
    table = names.table(usecase.name, names.BRONZE, name)
    grain = "one row per landed record and day" if spec.is_daily else "one row per record of the newest snapshot"

    @dg.asset(
        key=key,
        deps=[stages.source_key(usecase, names.LANDING, name)],
        description=f"Raw {name} records as landed ({grain}). {spec.description} Read by "
                    f"{stages.source_key(usecase, names.SILVER, name).to_user_string()}.",
        kinds={"delta", "polars"},
        **stages.placement(usecase, names.BRONZE),
        **partitioning(usecase, spec.is_daily),
        check_specs=[check_spec(HAS_ROWS, key, "the landed files held at least one record", "WARN")],
    )
    def bronze(context: dg.AssetExecutionContext, warehouse: Warehouse, landing: LandingZone
               ) -> dg.MaterializeResult:
        files = _landing_files(landing, usecase, name, spec, context)
        batch = read_bronze_batch(files, spec, batch_id=context.run_id, ingested_at=dt.datetime.now(dt.UTC))
        context.log.info(f"read {batch.table.num_rows} {name} records from {len(batch.files)} file(s)")
        run_days = sorted({day for _, day in files}) if spec.is_daily else None
        unread = [str(path) for path in unread_files(landing.path, usecase.name, name, spec, run_days)]
        if unread:
            context.log.warning(f"not read, the names do not follow {NAMING_CONVENTION}: {unread}")
        for path, count in batch.malformed_rows.items():
            context.log.warning(f"{path}: {count} record(s) could not be parsed; silver quarantines them")
        for path, columns in batch.unexpected_columns.items():
            context.log.warning(f"{path}: columns {columns} are not in the configuration and were not ingested")
        days = days_of_run(context, LANDING_DATE) if spec.is_daily else None
        _guard(context, usecase, spec, warehouse, table, days, batch.table)
        allow = spec.allow_schema_evolution
        if days is not None:
            write = warehouse.replace_days(*table, batch.table, days, allow_evolution=allow)
        else:
            write = warehouse.overwrite(*table, batch.table, allow_evolution=allow)
        # Counted in the version just committed, not in the frame handed to the writer.
        committed = committed_rows(warehouse, table, days, version=write.version,
                                   columns=[LANDING_DATE if days else next(iter(spec.columns))]).num_rows
        return dg.MaterializeResult(
            metadata=table_metadata(
                write, batch.table,
                source_files=dg.MetadataValue.json(batch.files),
                empty_files=dg.MetadataValue.json(batch.empty_files),
                unexpected_columns=dg.MetadataValue.json(batch.unexpected_columns),
                malformed_rows=dg.MetadataValue.json(batch.malformed_rows),
                unread_files=dg.MetadataValue.json(unread),
            ),
            check_results=[dg.AssetCheckResult(
                check_name=HAS_ROWS, passed=committed > 0, severity=dg.AssetCheckSeverity.WARN,
                metadata={"rows": committed, "rows_read": batch.table.num_rows,
                          "empty_files": len(batch.empty_files)},
            )],
        )

    return bronze


def bronze_assets(usecase: UseCaseConfig) -> list[dg.AssetsDefinition]:
    return [_bronze_asset(usecase, name, spec) for name, spec in usecase.sources.items()]
