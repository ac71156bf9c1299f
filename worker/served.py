"""The models one worker process serves: loading, warm-up, and answering jobs.

Transport-agnostic: the Celery tasks are thin adapters over ``ServedModels.handle``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Container
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from aimass.protocol.contract import parse_job, task_name
from aimass.protocol.errors import AimassError, InvalidJob, ModelError, UnknownModel
from aimass.protocol.manifest import Manifest, ModelKind
from aimass.worker.batcher import Batcher, BatchOutput, never_idle
from aimass.worker.buckets import BucketRunner, default_buckets, normalize_buckets
from aimass.worker.kinds import Limits, ModelLogic, logic_for
from aimass.worker.repository import ModelRepository, ModelVersion, verify_checksum
from aimass.worker.sessions import (
    CPU,
    DevicePlan,
    SessionRunner,
    SharedWeights,
    create_bucket_sessions,
    create_session,
    release_free_memory,
)
from aimass.worker.settings import WorkerSettings

log = logging.getLogger(__name__)


@dataclass
class ServedModel:
    """One model version with its session and its batcher, warmed up and ready."""

    version: ModelVersion
    logic: ModelLogic
    sessions: list[Any]  # one, or one per bucket
    batcher: Batcher
    providers: list[str]
    shared: SharedWeights | None = None  # the bucket sessions' one copy of the weights

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.version.name,
            "version": self.version.version,
            "kind": str(self.logic.kind),
            "providers": self.providers,
            "max_batch_size": self.batcher.max_batch_size,
            "max_queue_delay_ms": self.batcher.max_delay_s * 1000.0,
            "buckets": list(self.batcher.buckets),
            "shared_weight_bytes": self.shared.nbytes if self.shared else None,
        }

    @property
    def on_cpu(self) -> bool:
        return not self.providers or self.providers[0] == CPU


@dataclass
class StartedJob:
    """A job handed to its batcher: ``future`` resolves when its batch has run. A job
    pinned to a version still loading has no ``model`` (nor ``context``) until then."""

    model: ServedModel | None
    job: Any
    context: Any
    future: Future[BatchOutput]

    @property
    def name(self) -> str:
        return self.model.version.name if self.model else str(self.job.model)

    @property
    def version(self) -> int | None:
        return self.model.version.version if self.model else self.job.version

    @property
    def kind(self) -> str:
        return str(self.model.logic.kind) if self.model else "-"


class ServedModels:
    """Loads every model of the repository (or the chosen ones) and answers jobs."""

    def __init__(self, settings: WorkerSettings, plan: DevicePlan,
                 on_batch: Callable[[str, int, int, int, float], None] | None = None,
                 idle: Callable[[], bool] = never_idle,
                 cancelled: Container[str] = (),
                 mark_runs: Callable[[list[str]], None] | None = None) -> None:
        self.settings = settings
        self.mark_runs = mark_runs  # counts the runs a worker dies in (worker/consumer.py)
        self.cancelled = cancelled  # job ids producers cancelled (worker/cancels.py)
        self.plan = plan
        self.on_batch = on_batch
        self.idle = idle
        self.repository = ModelRepository(settings.model_repository)
        self.limits = Limits(settings.max_payload_bytes, settings.max_image_pixels)
        self._current: dict[str, ServedModel] = {}
        self._pinned: dict[tuple[str, int], ServedModel] = {}
        self._loading: dict[tuple[str, int], Future[ServedModel]] = {}  # pinned, loading
        # Versions that failed to load, with the files' stamp and the reason: not tried
        # again (nor logged again) until their files change.
        self._refused: dict[tuple[str, int], tuple[tuple[int, ...], str]] = {}
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load and warm up the newest version of each served model."""
        names = list(self.settings.models) or self.repository.names()
        for name in names:
            self._current[name] = self._load(self.repository.resolve(name))
        if not self._current:
            log.warning("no models found in %s", self.repository.root)

    def model_names(self) -> list[str]:
        return sorted(self._current)

    def models(self) -> list[ServedModel]:
        return [self._current[name] for name in self.model_names()]

    def handle(self, kind: ModelKind, kwargs: Any, arrived: float,
               job_id: str | None = None) -> dict[str, Any]:
        """Validate, decode, batch and run one job; raise a typed error for a bad one."""
        started = self.begin(kind, kwargs, arrived, job_id)
        started.future.result()
        return self.complete(started)

    def begin(self, kind: ModelKind, kwargs: Any, arrived: float,
              job_id: str | None = None, alone: bool = False) -> StartedJob:
        """Validate and decode a job and hand it to its model's batcher. Bad jobs raise
        their typed error here, before they can join (and spoil) a batch."""
        job = parse_job(kind, kwargs, strict=True)
        model = self.model_for(job.model, job.version)
        if isinstance(model, Future):  # its version is loading: start it once loaded
            started = StartedJob(None, job, None, Future())
            model.add_done_callback(lambda loading: self._begin_loaded(
                started, loading, kind, arrived, job_id, alone))
            return started
        return self._submit(model, job, kind, arrived, job_id, alone)

    def _submit(self, model: ServedModel, job: Any, kind: ModelKind, arrived: float,
                job_id: str | None, alone: bool = False) -> StartedJob:
        if model.logic.kind != kind:
            raise InvalidJob(
                f"model {job.model!r} is a {model.logic.kind} model; send its jobs as "
                f"{task_name(model.logic.kind)}"
            )
        feeds, size, context = model.logic.prepare(job, self.limits, job_id)
        future = model.batcher.submit(feeds, size, arrived, job_id, alone)
        return StartedJob(model, job, context, future)

    def _begin_loaded(self, started: StartedJob, loading: Future[ServedModel],
                      kind: ModelKind, arrived: float, job_id: str | None,
                      alone: bool) -> None:
        """On the loading thread: hand a job that waited for its version to the version's
        batcher, and pass the batch's outcome on to the job's own future."""
        try:
            inner = self._submit(loading.result(), started.job, kind, arrived, job_id, alone)
        except Exception as exc:
            started.future.set_exception(exc if isinstance(exc, AimassError) else ModelError(
                f"{type(exc).__name__}: {exc}"))
            return
        started.model, started.context = inner.model, inner.context
        inner.future.add_done_callback(lambda done: _pass_on(done, started.future))

    def complete(self, started: StartedJob) -> dict[str, Any]:
        """The result of a job whose batch has run (raises the batch's error)."""
        output = started.future.result()
        model = started.model
        assert model is not None  # set before its batch could run
        fields = model.logic.finish(started.job, started.context, output)
        timing: dict[str, Any] = {
            "queue_ms": round(output.queue_ms, 3),
            "inference_ms": round(output.inference_ms, 3),
            "batch_size": output.batch_size,
        }
        if model.batcher.buckets:
            timing["bucket"] = output.run_size
        return {"model": model.version.name, "version": model.version.version, **fields,
                "timing": timing}

    def model_for(self, name: str, version: int | None) -> ServedModel | Future[ServedModel]:
        """The loaded version a job asks for, or the future of its load: a version that
        is not loaded yet loads on a thread of its own, so that the consumer thread goes
        on taking jobs for every other model meanwhile."""
        current = self._current.get(name)
        if current is None:
            served = ", ".join(self.model_names()) or "none"
            raise UnknownModel(f"model {name!r} is not served by this worker (models: {served})")
        if version is None or version == current.version.version:
            return current
        with self._lock:
            pinned = self._pinned.get((name, version))
            published = version in self.repository.versions(name)
            if pinned is not None and published:
                return pinned
            if pinned is not None:  # unpublished since: let go of it
                del self._pinned[(name, version)]
                pinned.batcher.stop(timeout=0)
            loading = self._loading.get((name, version))
            if loading is None:
                self._refuse_fast(name, version, published)
                loading = self._loading[(name, version)] = Future()
                threading.Thread(target=self._load_pinned, args=(name, version, loading),
                                 name=f"load-{name}-v{version}", daemon=True).start()
            return loading

    def _refuse_fast(self, name: str, version: int, published: bool) -> None:
        """What can be refused without loading: a version that is not published, or that
        failed to load before (its files unchanged)."""
        if not published:
            self._load_version(name, version)  # raises UnknownModel, saying what there is
        reason = self._refusal(name, version)
        if reason is not None:
            raise ModelError(reason)

    def _load_pinned(self, name: str, version: int, loading: Future[ServedModel]) -> None:
        try:
            loaded = self._load_version(name, version)
        except Exception as exc:
            with self._lock:
                del self._loading[(name, version)]
            loading.set_exception(exc)
            return
        with self._lock:
            self._keep_pinned(loaded)
            del self._loading[(name, version)]
        loading.set_result(loaded)

    def reload(self) -> list[str]:
        """Load newly published versions (and new models) while the old ones serve, then
        switch each atomically; returns the names that changed. A version that fails to
        load is logged and the old one keeps serving."""
        names = list(self.settings.models) or self.repository.names()
        changed = []
        for name in names:
            current = self._current.get(name)
            versions = self.repository.versions(name)
            if not versions or (current and versions[-1] <= current.version.version):
                continue
            if self._refusal(name, versions[-1]) is not None:
                continue  # refused before, files unchanged: logged then
            try:
                loaded = self._load_version(name, versions[-1])
            except Exception as exc:
                log.error("could not load %s v%d (%s); %s", name, versions[-1], exc,
                          "keeping the old version" if current else "not serving it",
                          exc_info=not isinstance(exc, ModelError))
                continue
            with self._lock:
                self._current[name] = loaded
                if current is not None:
                    self._keep_pinned(current)
            log.info("now serving %s v%d", name, loaded.version.version)
            changed.append(name)
        return changed

    def _keep_pinned(self, model: ServedModel, per_model: int = 2) -> None:
        """Keep a few non-current versions warm for jobs that pin them."""
        name = model.version.name
        self._pinned[(name, model.version.version)] = model
        mine = sorted(v for (n, v) in self._pinned if n == name)
        for old in mine[:-per_model]:
            self._pinned.pop((name, old)).batcher.stop(timeout=0)

    def poke(self) -> None:
        """No more jobs are on their way for now: partial batches may run at once."""
        for model in self._loaded():
            model.batcher.poke()

    def stop(self) -> None:
        for model in self._loaded():
            model.batcher.stop(timeout=10)

    def cpu_fallback(self) -> bool:
        """Asked for a GPU, but a model runs on the CPU (the CUDA provider failed)."""
        return self.plan.gpu is not None and any(m.on_cpu for m in self._current.values())

    def _loaded(self) -> list[ServedModel]:
        """Every loaded version: the current ones and those kept for pinned jobs."""
        return [*self._current.values(), *self._pinned.values()]

    def _refusal(self, name: str, version: int) -> str | None:
        """Why a version failed to load, if it did and its files have not changed since."""
        refused = self._refused.get((name, version))
        if refused is not None and refused[0] == self.repository.stamp(name, version):
            return refused[1]
        return None

    def _load_version(self, name: str, version: int) -> ServedModel:
        """Load one version, or raise why it cannot be (``ModelError``, remembered)."""
        reason = self._refusal(name, version)
        if reason is not None:
            raise ModelError(reason)
        stamp = self.repository.stamp(name, version)
        try:
            return self._load(self.repository.resolve(name, version))
        except ModelError as error:
            self._refused[(name, version)] = (stamp, error.message)
            raise

    def buckets_for(self, manifest: Manifest, max_batch: int) -> tuple[int, ...]:
        """The batch sizes this model's sessions are built for; empty: exact sizes."""
        setting = self.settings.bucket_setting()
        if setting == "off" or (setting == "auto" and self.plan.gpu is None):
            return ()
        if isinstance(setting, tuple):
            return normalize_buckets(setting, max_batch)
        return normalize_buckets(manifest.batching.buckets or default_buckets(max_batch),
                                 max_batch)

    def _load(self, version: ModelVersion) -> ServedModel:
        started = time.monotonic()
        model_file = verify_checksum(version)
        logic = logic_for(version.manifest)
        batching = version.manifest.batching
        max_batch = self.settings.max_batch_size or batching.max_batch_size
        delay_ms = self.settings.max_queue_delay_ms
        if delay_ms is None:
            delay_ms = batching.max_queue_delay_ms
        buckets = self.buckets_for(version.manifest, max_batch)
        shared: SharedWeights | None = None
        runner: BucketRunner | SessionRunner
        try:
            if buckets:
                by_size, shared = create_bucket_sessions(model_file, self.plan, buckets)
                sessions = list(by_size.values())
                runner = BucketRunner({size: SessionRunner(session)
                                       for size, session in by_size.items()})
            else:
                sessions = [create_session(model_file, self.plan)]
                runner = SessionRunner(sessions[0])
        except Exception as exc:  # ONNX Runtime raises its own types for bad files
            raise ModelError(f"model file of {version.name!r} v{version.version} could not "
                             f"be loaded by ONNX Runtime: {exc}") from None
        # Each session runs once at every size it will serve before any job reaches it.
        for size in buckets or sorted({1, max_batch}):
            runner(logic.warmup_feeds(size))
        on_batch = self.on_batch
        batcher = Batcher(
            f"{version.name}-v{version.version}", runner, max_batch, delay_ms,
            on_batch=(lambda size, ran, ms: on_batch(version.name, version.version, size, ran,
                                                     ms))
            if on_batch else None,
            idle=self.idle, time_limit_s=self.settings.job_time_limit_s,
            interrupt=runner.interrupt, buckets=buckets, cancelled=self.cancelled,
            on_start=self.mark_runs)
        loaded = ServedModel(version, logic, sessions, batcher,
                             list(sessions[0].get_providers()), shared)
        release_free_memory()  # the parsed model ONNX Runtime has let go of
        log.info("loaded %s v%d on %s in %.0f ms (max batch %d, max delay %.1f ms, %s)",
                 version.name, version.version, ", ".join(loaded.providers),
                 (time.monotonic() - started) * 1000, max_batch, delay_ms,
                 f"buckets {', '.join(map(str, buckets))}" if buckets else "exact sizes")
        if self.plan.gpu is not None and loaded.on_cpu:
            log.error("%s v%d: GPU %s was asked for, but it runs on the CPU: the CUDA provider "
                      "could not start (see the warnings above). `aimass check` fails until "
                      "this is fixed, unless AIMASS_ALLOW_CPU_FALLBACK=1", version.name,
                      version.version, self.plan.gpu)
        return loaded


def _pass_on(done: Future[BatchOutput], to: Future[BatchOutput]) -> None:
    error = done.exception()
    if error is not None:
        to.set_exception(error)
    else:
        to.set_result(done.result())
