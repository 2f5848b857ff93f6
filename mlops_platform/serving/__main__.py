"""Run the serving process: every endpoint deployed under ``--serving-dir``, on one uvicorn server.

    python -m mlops_platform.serving --serving-dir DIR --host 127.0.0.1 --port 8080 \\
        --warehouse-root WAREHOUSE --catalog CATALOG

SIGTERM or SIGINT drains (see ``mlops_platform/serving/process.py``): new connections are refused, requests already
sent are answered, the inference spool is shipped to Delta, then the process exits.
"""

from __future__ import annotations

import argparse
import sys

from mlops_platform.serving.inference_table import INFERENCE_SCHEMA, INFERENCE_TABLE
from mlops_platform.serving.process import ServerOptions, run_server


def parse_args(argv: list[str] | None = None) -> ServerOptions:
    parser = argparse.ArgumentParser(prog="python -m mlops_platform.serving", description=__doc__.split("\n")[0])
    parser.add_argument("--serving-dir", required=True, help="folder holding endpoints/*.json and model copies")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0: a free port, recorded in the pid file")
    parser.add_argument("--warehouse-root", required=True, help="root folder of the Delta warehouse")
    parser.add_argument("--catalog", required=True, help="catalog name of the inference table")
    parser.add_argument("--inference-table", default=f"{INFERENCE_SCHEMA}.{INFERENCE_TABLE}",
                        help="schema.table of the inference log (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=None, help="scoring threads (default: the cores)")
    parser.add_argument("--max-pending", type=int, default=256,
                        help="requests waiting for a scorer before new ones get 503 with Retry-After")
    parser.add_argument("--max-batch-rows", type=int, default=256,
                        help="rows of queued requests one scorer call may take together")
    parser.add_argument("--log-batch-rows", type=int, default=1_000)
    parser.add_argument("--log-flush-seconds", type=float, default=1.0)
    parser.add_argument("--poll-seconds", type=float, default=0.5, help="how often endpoint configs are checked")
    parser.add_argument("--drain-idle-seconds", type=float, default=0.5,
                        help="after SIGTERM, stop once no request arrived for this long")
    parser.add_argument("--drain-max-seconds", type=float, default=30.0)
    parser.add_argument("--no-compile", action="store_true",
                        help="score every model through its pyfunc on a DataFrame (slower; for comparison)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    schema, _, table = args.inference_table.partition(".")
    if not table:
        parser.error(f"--inference-table must be schema.table, got {args.inference_table!r}")
    return ServerOptions(
        serving_dir=args.serving_dir, warehouse_root=args.warehouse_root, catalog=args.catalog, host=args.host,
        port=args.port, inference_schema=schema, inference_table=table, workers=args.workers,
        max_pending=args.max_pending, max_batch_rows=args.max_batch_rows, log_batch_rows=args.log_batch_rows,
        log_flush_seconds=args.log_flush_seconds, poll_seconds=args.poll_seconds,
        compile_models=not args.no_compile, drain_idle_seconds=args.drain_idle_seconds,
        drain_max_seconds=args.drain_max_seconds, log_level=args.log_level,
    )


def main(argv: list[str] | None = None) -> int:
    return run_server(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
