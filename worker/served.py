"""The models one worker process serves: loading, warm-up, and answering jobs.

Transport-agnostic: the Celery tasks are thin adapters over ``ServedModels.handle``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Container
from concurrent.futures import Future
from typing import Any

from aimass.protocol.contract import parse_job, task_name
from aimass.protocol.errors import AimassError, InvalidJob, ModelError, UnknownModel
from aimass.protocol.manifest import ModelKind, near_best_batch
from aimass.worker.batcher import Batcher, BatchOutput, never_idle
from aimass.worker.buckets import (
    SWEEP_MAX_BATCH,
    default_buckets,
)
from aimass.worker.decoding import Decoder, StreamSink
from aimass.worker.infer import TensorModel
from aimass.worker.kinds import Limits, ModelLogic, logic_for
from aimass.worker.loading import BatchLimit, Sessions, batch_limit, buckets_for
from aimass.worker.repository import ModelRepository, ModelVersion, verify_checksum
from aimass.worker.sequences import SequenceModel
from aimass.worker.served_model import ServedModel, StartedJob
from aimass.worker.sessions import (
    DeviceHealth,
    DevicePlan,
    release_free_memory,
)
from aimass.worker.settings import WorkerSettings

log = logging.getLogger(__name__)


class ServedModels:
    """Loads every model of the repository (or the chosen ones) and answers jobs."""

    def __init__(
        self,
        settings: WorkerSettings,
        plan: DevicePlan,
        on_batch: Callable[[str, int, int, int, float], None] | None = None,
        idle: Callable[[], bool] = never_idle,
        cancelled: Container[str] = (),
        mark_runs: Callable[[list[str]], None] | None = None,
        on_device_lost: Callable[[str], None] | None = None,
        streams: StreamSink | None = None,
    ) -> None:
        self.settings = settings
        self.streams = streams  # where sequence models write their jobs' streams
        self.device = DeviceHealth()  # this process's device, as the runs find it
        self.on_device_lost = on_device_lost
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
            self._current[name] = self.build(self.repository.resolve(name))
        if not self._current:
            log.warning("no models found in %s", self.repository.root)

    def model_names(self) -> list[str]:
        return sorted(self._current)

    def models(self) -> list[ServedModel]:
        return [self._current[name] for name in self.model_names()]

    def handle(
        self, kind: ModelKind, kwargs: Any, arrived: float, job_id: str | None = None
    ) -> dict[str, Any]:
        """Validate, decode, batch and run one job; raise a typed error for a bad one."""
        started = self.begin(kind, kwargs, arrived, job_id)
        started.future.result()
        return self.complete(started)

    def begin(
        self,
        kind: ModelKind,
        kwargs: Any,
        arrived: float,
        job_id: str | None = None,
        alone: bool = False,
    ) -> StartedJob:
        """Validate and decode a job and hand it to its model's batcher. Bad jobs raise
        their typed error here, before they can join (and spoil) a batch."""
        job = parse_job(kind, kwargs, strict=True)
        model = self.model_for(job.model, job.version)
        if isinstance(model, Future):  # its version is loading: start it once loaded
            started = StartedJob(None, job, None, Future(), kind)
            model.add_done_callback(
                lambda loading: self._begin_loaded(started, loading, kind, arrived, job_id, alone)
            )
            return started
        return self._submit(model, job, kind, arrived, job_id, alone)

    def _submit(
        self,
        model: ServedModel,
        job: Any,
        kind: ModelKind,
        arrived: float,
        job_id: str | None,
        alone: bool = False,
    ) -> StartedJob:
        if kind is not ModelKind.tensor and model.logic.kind != kind:
            raise InvalidJob(
                f"model {job.model!r} is a {model.logic.kind} model; send its jobs as "
                f"{task_name(model.logic.kind)} (or its tensors as {task_name(ModelKind.tensor)})"
            )
        feeds, size, context = model.logic_of(kind).prepare(job, self.limits, job_id)
        if model.decoder is not None and kind is ModelKind.sequence:
            future = model.decoder.submit(context, arrived, alone)
        else:
            future = model.batcher.submit(feeds, size, arrived, job_id, alone)
        return StartedJob(model, job, context, future, kind)

    def _begin_loaded(
        self,
        started: StartedJob,
        loading: Future[ServedModel],
        kind: ModelKind,
        arrived: float,
        job_id: str | None,
        alone: bool,
    ) -> None:
        """On the loading thread: hand a job that waited for its version to the version's
        batcher, and pass the batch's outcome on to the job's own future."""
        try:
            inner = self._submit(loading.result(), started.job, kind, arrived, job_id, alone)
        except Exception as exc:
            started.future.set_exception(
                exc if isinstance(exc, AimassError) else ModelError(f"{type(exc).__name__}: {exc}")
            )
            return
        started.model, started.context = inner.model, inner.context
        inner.future.add_done_callback(lambda done: _pass_on(done, started.future))

    def complete(self, started: StartedJob) -> dict[str, Any]:
        """The result of a job whose batch has run (raises the batch's error)."""
        output = started.future.result()
        model = started.model
        assert model is not None  # set before its batch could run
        fields = model.logic_of(started.task or model.logic.kind).finish(
            started.job, started.context, output
        )
        timing: dict[str, Any] = {
            "queue_ms": round(output.queue_ms, 3),
            "inference_ms": round(output.inference_ms, 3),
            "batch_size": output.batch_size,
        }
        if model.batcher.buckets:
            timing["bucket"] = output.run_size
        return {
            "model": model.version.name,
            "version": model.version.version,
            **fields,
            "timing": timing,
        }

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
                pinned.stop(timeout=0)
            loading = self._loading.get((name, version))
            if loading is None:
                self._refuse_fast(name, version, published)
                loading = self._loading[(name, version)] = Future()
                threading.Thread(
                    target=self._load_pinned,
                    args=(name, version, loading),
                    name=f"load-{name}-v{version}",
                    daemon=True,
                ).start()
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
                log.error(
                    "could not load %s v%d (%s); %s",
                    name,
                    versions[-1],
                    exc,
                    "keeping the old version" if current else "not serving it",
                    exc_info=not isinstance(exc, ModelError),
                )
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
            self._pinned.pop((name, old)).stop(timeout=0)

    def poke(self) -> None:
        """No more jobs are on their way for now: partial batches may run at once."""
        for model in self._loaded():
            model.batcher.poke()

    def stop(self) -> None:
        for model in self._loaded():
            model.stop(timeout=10)

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
            return self.build(self.repository.resolve(name, version))
        except ModelError as error:
            self._refused[(name, version)] = (stamp, error.message)
            raise

    def build(self, version: ModelVersion) -> ServedModel:
        """Load one version and warm it as this worker serves it (also what
        ``aimass doctor`` inspects)."""
        started = time.monotonic()
        model_file = verify_checksum(version)
        manifest = version.manifest
        tensors = TensorModel(manifest)
        logic: ModelLogic = tensors
        if manifest.kind is ModelKind.sequence:
            logic = SequenceModel(manifest)
        elif manifest.kind is not ModelKind.tensor:
            logic = logic_for(manifest)
        limit = batch_limit(self.settings, self.plan, manifest)
        delay_ms = self.settings.max_queue_delay_ms
        if delay_ms is None:
            delay_ms = version.manifest.batching.max_queue_delay_ms
        # A sweep builds a session for every size it may try, and keeps those it needs.
        buckets = buckets_for(self.settings, self.plan, manifest, limit.size or SWEEP_MAX_BATCH)
        try:
            built = Sessions.build(model_file, self.plan, buckets, manifest.batched)
            settled: dict[int, float] = {}
            if limit.size is None:
                settled = built.sweep(logic, buckets or default_buckets(SWEEP_MAX_BATCH))
                limit = BatchLimit(
                    near_best_batch({size: size / max(ms, 1e-6) for size, ms in settled.items()}),
                    "sweep",
                )
                if buckets:
                    buckets = buckets_for(self.settings, self.plan, manifest, limit.size or 1)
                    built.keep(model_file, self.plan, buckets)
            max_batch = limit.size or 1
            # Each session runs at every size it will serve until its run time settles,
            # before any job reaches it: a job does not pay for first-run allocations.
            for size in buckets or sorted({1, max_batch}):
                if size not in settled:
                    settled[size] = built.settle(logic, size)
        except Exception as exc:  # ONNX Runtime raises its own types for bad files
            raise ModelError(
                f"model file of {version.name!r} v{version.version} could not "
                f"be loaded by ONNX Runtime: {exc}"
            ) from None
        on_batch = self.on_batch
        batcher = Batcher(
            f"{version.name}-v{version.version}",
            built.runner,
            max_batch,
            delay_ms,
            on_batch=(lambda size, ran, ms: on_batch(version.name, version.version, size, ran, ms))
            if on_batch
            else None,
            idle=self.idle,
            time_limit_s=self.settings.job_time_limit_s,
            interrupt=built.runner.interrupt,
            buckets=buckets,
            cancelled=self.cancelled,
            on_start=self.mark_runs,
            device=self.device,
            on_device_lost=self.on_device_lost,
        )
        kept = sorted(buckets or {1, max_batch})
        decoder = self._decoder(version, logic, built, buckets)
        loaded = ServedModel(
            version,
            logic,
            built.sessions,
            batcher,
            list(built.sessions[0].get_providers()),
            built.shared,
            limit.source,
            {size: settled[size] for size in kept},
            tensors,
            decoder,
        )
        release_free_memory()  # the parsed model ONNX Runtime has let go of
        log.info(
            "loaded %s v%d on %s in %.0f ms (max batch %d from the %s, max delay %.1f "
            "ms, %s; settled run times %s)",
            version.name,
            version.version,
            ", ".join(loaded.providers),
            (time.monotonic() - started) * 1000,
            max_batch,
            limit.source,
            delay_ms,
            f"buckets {', '.join(map(str, buckets))}" if buckets else "exact sizes",
            ", ".join(f"{size}: {settled[size]:.2f} ms" for size in kept),
        )
        if self.plan.gpu is not None and loaded.on_cpu:
            log.error(
                "%s v%d: GPU %s was asked for, but it runs on the CPU: the CUDA provider "
                "could not start (see the warnings above). `aimass check` fails until "
                "this is fixed, unless AIMASS_ALLOW_CPU_FALLBACK=1",
                version.name,
                version.version,
                self.plan.gpu,
            )
        return loaded

    def _decoder(
        self, version: ModelVersion, logic: ModelLogic, built: Sessions, buckets: tuple[int, ...]
    ) -> Decoder | None:
        """A sequence model's decoding loop (worker/decoding.py), for its jobs."""
        if not isinstance(logic, SequenceModel):
            return None
        settings = self.settings
        return Decoder(
            f"{version.name}-v{version.version}",
            built.runner.unstoppable(),  # a sequence ends between steps, never mid-run
            logic,
            [output.name for output in built.sessions[0].get_outputs()],
            max_sequences=settings.max_sequences,
            batching=settings.sequence_batching,
            buckets=buckets,
            time_limit_s=settings.job_time_limit_s,
            cancelled=self.cancelled,
            on_start=self.mark_runs,
            streams=self.streams,
            device=self.device,
            on_device_lost=self.on_device_lost,
        )


def _pass_on(done: Future[BatchOutput], to: Future[BatchOutput]) -> None:
    error = done.exception()
    if error is not None:
        to.set_exception(error)
    else:
        to.set_result(done.result())
