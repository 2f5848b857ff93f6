"""Where a run's wall time goes, from stack samples: by kind of work (the issue's split), by stage, by library.

A thread samples the stack of the thread running the job every few milliseconds; each sample stands for the wall
time since the previous one, so a stretch in which the sampler could not run (a C call holding the GIL) still
counts, and the samples of a window add up to its wall time. Nothing in the platform is instrumented: a sample is
classified by the files and function names on its stack (which library family, which Dagster storage call), and
assigned to a stage by the time windows of the run's own step events. Code can move between modules of the
platform without changing the attribution.

The rules that classify a sample are ordered: the first that matches wins, so Delta reads inside model monitoring
count as Delta reads, and what is left of a step is the step's own compute (our code with pandas, Polars, NumPy,
scikit-learn under it).
"""

from __future__ import annotations

import functools
import sys
import sysconfig
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import mlops_platform

# One frame of a stack: file, qualified function name, first line of the function.
Frame = tuple[str, str, int]

PLATFORM_DIR = str(Path(mlops_platform.__file__).resolve().parent) + "/"
BENCHMARKS_DIR = str(Path(__file__).resolve().parent) + "/"
STDLIB_DIRS = tuple({sysconfig.get_path("stdlib") + "/", sysconfig.get_path("platstdlib") + "/"})
SITE_PACKAGES = "/site-packages/"
# The platform's command and replay drivers call jobs; they are not a step's compute.
DRIVER_FILES = ("replay.py", "cli.py")

IMPORTS = "imports"
REPORT = "report rendering (Evidently)"
MODEL_LOADING = "model loading (MLflow)"
EVALUATION = "model evaluation (mlflow.models.evaluate)"
DELTA_WRITES = "Delta writes"
DELTA_READS = "Delta reads"
MLFLOW = "MLflow calls (tracking, registry)"
DAGSTER_STORAGE = "Dagster storage (event log, runs)"
COMPUTE = "compute (our code, its libraries)"
ORCHESTRATION = "Dagster orchestration"
CATEGORIES = (IMPORTS, REPORT, MODEL_LOADING, EVALUATION, DELTA_WRITES, DELTA_READS, MLFLOW, DAGSTER_STORAGE, COMPUTE,
              ORCHESTRATION)

# deltalake's Python API: everything under writer/ and these methods commit; every other call reads.
DELTA_WRITE_FUNCTIONS = {"create", "vacuum", "update", "merge", "execute", "restore", "create_checkpoint",
                         "compact_logs", "cleanup_metadata", "delete", "repair", "compact", "z_order",
                         "create_write_transaction"}
MODEL_LOAD_FUNCTIONS = {"load_model", "_load_model", "_load_pyfunc", "load_model_from_local_path"}
# Where a sample outside every step falls in its run.
RUN_START = "(run start)"
BETWEEN_STEPS = "(between)"
RUN_END = "(run end)"


@functools.cache
def family(filename: str, depth: int = 1) -> str:
    """The library a file belongs to (``dagster``, ``deltalake``, ``mlops_platform``, ``stdlib``, ``import``).

    ``depth`` 2 and 3 split big packages into their subpackages (``dagster._core``, ``dagster._core.storage``).
    """
    if filename.startswith("<frozen importlib"):
        return "import"
    if filename.startswith(PLATFORM_DIR):
        parts = ["mlops_platform", *filename[len(PLATFORM_DIR):].split("/")[:-1]]
    elif filename.startswith(BENCHMARKS_DIR):
        return "benchmarks"
    elif SITE_PACKAGES in filename:
        parts = filename.split(SITE_PACKAGES, 1)[1].split("/")
        parts[-1] = parts[-1].removesuffix(".py")
    elif filename.startswith(STDLIB_DIRS) or filename.startswith("<frozen"):
        return "stdlib"
    else:
        return "other"
    return ".".join(parts[:depth])


@dataclass(frozen=True)
class Sample:
    at: float                  # time.time() when taken, comparable with Dagster's event timestamps
    seconds: float             # the wall time this sample stands for
    stack: tuple[Frame, ...]   # outermost frame first


class StackSampler:
    """Samples one thread's Python stack every ``interval`` seconds while running (a context manager).

    A sample keeps the code objects only; file and function names are looked up when samples are read, so the
    sampling thread holds the GIL as briefly as possible.
    """

    def __init__(self, interval: float = 0.01, thread_id: int | None = None) -> None:
        self.interval = interval
        self.thread_id = thread_id or threading.get_ident()
        self._raw: list[tuple[float, float, tuple]] = []
        self._frames: dict[object, Frame] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="stack-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()

    def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop.wait(self.interval):
            top = sys._current_frames().get(self.thread_id)
            now = time.perf_counter()
            codes = []
            while top is not None:
                codes.append(top.f_code)
                top = top.f_back
            self._raw.append((time.time(), now - last, tuple(codes)))
            last = now

    def _frame(self, code) -> Frame:
        frame = self._frames.get(code)
        if frame is None:
            frame = self._frames[code] = (code.co_filename, code.co_qualname, code.co_firstlineno)
        return frame

    @property
    def samples(self) -> list[Sample]:
        return [Sample(at, seconds, tuple(self._frame(code) for code in reversed(codes)))
                for at, seconds, codes in self._raw]

    def between(self, start: float, end: float) -> list[Sample]:
        return [sample for sample in self.samples if start <= sample.at < end]


def _is_driver(frame: Frame) -> bool:
    return frame[0].startswith(PLATFORM_DIR) and frame[0].endswith(DRIVER_FILES)


def _is_platform(frame: Frame) -> bool:
    return frame[0].startswith(PLATFORM_DIR) and not _is_driver(frame)


def _is_delta_write(frame: Frame) -> bool:
    if family(frame[0]) != "deltalake":
        return False
    return "/deltalake/writer/" in frame[0] or frame[0].endswith("transaction.py") or \
        frame[1].rsplit(".", 1)[-1] in DELTA_WRITE_FUNCTIONS


# The platform's Delta reader scans the pruned pyarrow dataset itself: that scan is a Delta read, not our compute.
PLATFORM_DELTA_READER = (PLATFORM_DIR + "storage/delta.py", "DeltaTables.read")


def _is_delta_read(frame: Frame) -> bool:
    return family(frame[0]) == "deltalake" or family(frame[0], 3) == "polars.io.delta" or \
        frame[:2] == PLATFORM_DELTA_READER


def _is_model_load(frame: Frame) -> bool:
    return (family(frame[0]) == "mlflow" and frame[1].rsplit(".", 1)[-1] in MODEL_LOAD_FUNCTIONS) or \
        family(frame[0]) == "skops"


RULES: tuple[tuple[str, Callable[[Frame], bool]], ...] = (
    (IMPORTS, lambda frame: family(frame[0]) == "import"),
    (REPORT, lambda frame: family(frame[0]) == "evidently"),
    (MODEL_LOADING, _is_model_load),
    (EVALUATION, lambda frame: family(frame[0], 3) == "mlflow.models.evaluation"),
    (DELTA_WRITES, _is_delta_write),
    (DELTA_READS, _is_delta_read),
    (MLFLOW, lambda frame: family(frame[0]) == "mlflow"),
    (DAGSTER_STORAGE, lambda frame: family(frame[0], 3) == "dagster._core.storage"),
    (COMPUTE, _is_platform),
)


@functools.cache
def classify(stack: tuple[Frame, ...]) -> str:
    for category, matches in RULES:
        if any(matches(frame) for frame in stack):
            return category
    return ORCHESTRATION


def leaf_family(stack: Sequence[Frame]) -> str:
    """The library the sample was executing in: the innermost frame outside the standard library."""
    for frame in reversed(stack):
        name = family(frame[0])
        if name not in ("stdlib", "import", "other"):
            return name
    return "stdlib"


@dataclass(frozen=True)
class Window:
    """A stretch of a run: a step (with the stage its assets belong to) or the run itself."""

    stage: str
    start: float
    end: float


@dataclass
class Split:
    """Seconds by (stage, category), and by (stage, library) for the compute samples."""

    seconds: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    libraries: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    total: float = 0.0

    def add(self, samples: Iterable[Sample], steps: Sequence[Window]) -> None:
        first = min((step.start for step in steps), default=float("inf"))
        last = max((step.end for step in steps), default=float("-inf"))
        for sample in samples:
            stage = next((step.stage for step in steps if step.start <= sample.at < step.end), None)
            if stage is None:
                stage = RUN_START if sample.at < first else RUN_END if sample.at >= last else BETWEEN_STEPS
            category = classify(sample.stack)
            self.seconds[stage, category] += sample.seconds
            if category == COMPUTE:
                self.libraries[stage, leaf_family(sample.stack)] += sample.seconds
            self.total += sample.seconds

    def by_category(self) -> dict[str, float]:
        totals: dict[str, float] = defaultdict(float)
        for (_, category), seconds in self.seconds.items():
            totals[category] += seconds
        return {category: totals[category] for category in CATEGORIES if category in totals}

    def by_stage(self) -> dict[str, float]:
        totals: dict[str, float] = defaultdict(float)
        for (stage, _), seconds in self.seconds.items():
            totals[stage] += seconds
        return dict(sorted(totals.items(), key=lambda item: -item[1]))

    def scaled(self, factor: float) -> Split:
        scaled = Split(total=self.total * factor)
        for key, seconds in self.seconds.items():
            scaled.seconds[key] = seconds * factor
        for key, seconds in self.libraries.items():
            scaled.libraries[key] = seconds * factor
        return scaled

    def as_dict(self) -> dict[str, object]:
        return {
            "total_seconds": round(self.total, 3),
            "by_category": {name: round(value, 3) for name, value in self.by_category().items()},
            "by_stage": {name: round(value, 3) for name, value in self.by_stage().items()},
            "by_stage_and_category": {f"{stage} | {category}": round(value, 3)
                                      for (stage, category), value in sorted(self.seconds.items())},
            "compute_by_stage_and_library": {f"{stage} | {library}": round(value, 3)
                                             for (stage, library), value in sorted(self.libraries.items())},
        }


def _is_entry(stack: Sequence[Frame], index: int) -> bool:
    """Whether the frame at ``index`` is where its library was entered, or the platform's own code."""
    frame = stack[index]
    if _is_platform(frame):
        return True
    if index == 0 or family(frame[0]) in ("stdlib", "import", "benchmarks"):
        return False
    return family(frame[0], 3) != family(stack[index - 1][0], 3)


def hotspots(samples: Sequence[Sample], top: int = 15) -> list[dict[str, object]]:
    """The functions with the most cumulative time, among the platform's own functions and the functions through
    which a library is entered.

    A library function counts only the samples in which no platform function runs below it, so Dagster's
    machinery that calls an asset's body is charged with its own work, not with the body's.
    """
    cumulative: dict[Frame, float] = defaultdict(float)
    total = sum(sample.seconds for sample in samples)
    for sample in samples:
        stack = sample.stack
        innermost_platform = max((i for i, frame in enumerate(stack) if _is_platform(frame)), default=-1)
        seen = set()
        for index, frame in enumerate(stack):
            if frame in seen or not _is_entry(stack, index):
                continue
            if _is_platform(frame) or index > innermost_platform:
                seen.add(frame)
                cumulative[frame] += sample.seconds
    ranked = sorted(cumulative.items(), key=lambda item: -item[1])
    return [{"function": frame[1], "module": module_name(frame[0]), "line": frame[2],
             "seconds": round(seconds, 3), "share": round(seconds / total, 4) if total else 0.0}
            for frame, seconds in ranked[:top]]


def module_name(filename: str) -> str:
    if filename.startswith(PLATFORM_DIR):
        return "mlops_platform/" + filename[len(PLATFORM_DIR):]
    if SITE_PACKAGES in filename:
        return filename.split(SITE_PACKAGES, 1)[1]
    return filename
