"""One training loop for every generative model.

The model declares phases (``D`` every step, ``G`` every ``n_critic`` steps, ...) and computes each
phase's gradients. `TrainStep` runs one step of them (optimisers, mixed precision, EMA) on a batch it is
given; `Trainer` adds the data, batching, distributed replication, logging, checkpoints and exact resume.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from synthmed import __version__
from synthmed.config import config_to_yaml
from synthmed.data.dataset import load_arrays
from synthmed.data.manifest import Manifest, load_manifest
from synthmed.errors import UserError
from synthmed.fileio import atomic_write_text, refuse_overlap
from synthmed.models.base import GenerativeModel
from synthmed.models.registry import DataInfo, build_model
from synthmed.train import checkpoint as ckpt
from synthmed.train.config import RunConfig
from synthmed.train.distributed import (
    DistEnv,
    init_distributed,
    max_replica_divergence,
    select_device,
    synchronize_batch_norm,
)
from synthmed.train.logger import LossAccumulator, RunLogger, plot_losses
from synthmed.train.run_history import check_resume, checkpoint_history, history_entry, write_history
from synthmed.train.watch import MonitorContext, MonitorFactory, TrainingMonitor, draw_fixed_pairs, sample_grid

if TYPE_CHECKING:
    from synthmed.train.config import TrainSection

log = logging.getLogger(__name__)


class BatchSchedule:
    """Which cases form the batch of each step: a fresh seeded shuffle every epoch.

    The order is a pure function of (seed, step), so a resumed run sees exactly the batches an
    uninterrupted one would. (The thesis's HA-GAN collapsed when it trained without shuffling.)
    """

    def __init__(self, n_cases: int, batch_size: int, seed: int, env: DistEnv) -> None:
        if batch_size % env.world_size:
            raise UserError(f"train.batch_size {batch_size} must be divisible by the number of processes {env.world_size}")
        if n_cases < batch_size:
            raise UserError(f"train.batch_size {batch_size} is larger than the {n_cases} training cases")
        self.n_cases, self.batch_size, self.seed, self.env = n_cases, batch_size, seed, env
        self.batches_per_epoch = n_cases // batch_size  # the last incomplete batch is dropped

    def indices(self, step: int) -> torch.Tensor:
        epoch, position = divmod(step, self.batches_per_epoch)
        order = torch.randperm(self.n_cases, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        batch = order[position * self.batch_size : (position + 1) * self.batch_size]
        per_rank = self.batch_size // self.env.world_size
        return batch[self.env.rank * per_rank : (self.env.rank + 1) * per_rank]


def make_optimizer(section, params) -> torch.optim.Optimizer:
    if section.type == "adam":
        return torch.optim.Adam(params, lr=section.lr, betas=section.betas, eps=section.eps, weight_decay=section.weight_decay)
    if section.type == "adamw":
        return torch.optim.AdamW(params, lr=section.lr, betas=section.betas, eps=section.eps, weight_decay=section.weight_decay)
    return torch.optim.RMSprop(params, lr=section.lr, eps=section.eps, weight_decay=section.weight_decay)


def ema_half_life(images_seen: int, ema_kimg: float, ema_rampup: float | None = None) -> float:
    """The generator EMA's half-life in images after ``images_seen`` training images.

    StyleGAN2-ADA's ramp-up (NVlabs/stylegan2-ada-pytorch, training/training_loop.py, "Update G_ema"):
    ``ema_nimg = min(ema_kimg * 1000, cur_nimg * ema_rampup)``, with ``cur_nimg`` the images seen before
    the step, so the half-life grows with training up to ``ema_kimg`` and a short run's EMA is not
    dominated by the random initial weights. ``ema_rampup=None``: the full half-life from the start.
    """
    half_life = ema_kimg * 1000.0
    if ema_rampup is not None:
        half_life = min(half_life, images_seen * ema_rampup)
    return half_life


def ema_beta(batch_size: int, ema_kimg: float, ema_rampup: float | None = None, images_seen: int = 0) -> float:
    """Per-step EMA decay for the half-life `ema_half_life` gives (StyleGAN2-ADA's convention:
    ``beta = 0.5 ** (batch_size / max(ema_nimg, 1e-8))``); 0 (the EMA copies the network) at a zero half-life."""
    half_life = ema_half_life(images_seen, ema_kimg, ema_rampup)
    return 0.0 if half_life <= 0 else 0.5 ** (batch_size / max(half_life, 1e-8))


def case_classes(manifest: Manifest, ids: list[str], key: str, classes: list[str] | None) -> tuple[list[str], torch.Tensor]:
    """Class names and per-case class indices from the manifest case field ``key`` (-1: no value, unlabelled).

    Raises:
        UserError: no case has the field, or a case's value is not among the given ``classes``.
    """
    values = {i: manifest.case(i).get(key) for i in ids}
    if classes is None:
        every = (c.get(key) for c in manifest.cases)
        classes = sorted({str(v) for v in every if v not in (None, "")})
    if not classes:
        raise UserError(f"data.class_key: no case of {manifest.path} has a value for {key!r}")
    index = {name: k for k, name in enumerate(classes)}
    unknown = sorted({str(v) for v in values.values() if v not in (None, "") and str(v) not in index})
    if unknown:
        raise UserError(f"data.classes: {manifest.path} has {key!r} values {unknown} not in the classes {classes}")
    labels = [-1 if v in (None, "") else index[str(v)] for v in values.values()]
    return list(classes), torch.tensor(labels, dtype=torch.long)


def data_record(manifest: Manifest, ids: list[str]) -> dict:
    """What the sampler and later stages need to know about the training data, kept in checkpoints."""
    return {
        "manifest_path": str(manifest.path),
        "manifest_sha256": manifest.sha256,
        "trained_on": sorted(ids),
        "labels": {str(k): v for k, v in manifest.labels.items()},  # class indices 0..L-1
        "label_values": {str(k): v for k, v in manifest.label_values.items()},  # their source values
        "preprocessing": manifest.preprocessing,
        "train_cases": [{k: manifest.case(i)[k] for k in ("id", "affine", "spacing", "shape")} for i in sorted(ids)],
    }


class TrainStep:
    """One training step of a model on a batch the caller gives: no data, run folder or logging.

    Every phase due at the step runs with its optimiser (under bf16 autocast for batches on CUDA when
    ``train.amp``); then the EMA of ``model.ema_target`` advances once, if a phase updated that network, with
    the decay of the images seen so far (`ema_beta`, ramped up as in StyleGAN2-ADA).
    `Trainer` runs it for real runs, the benchmarks time it.
    """

    def __init__(self, model: GenerativeModel, optimizers: dict[str, torch.optim.Optimizer], train: TrainSection) -> None:
        self.model, self.optimizers = model, optimizers
        self.amp = train.amp
        self.batch_size, self.ema_kimg, self.ema_rampup = train.batch_size, train.ema_kimg, train.ema_rampup

    def ema_beta(self, step: int) -> float:
        """The EMA decay at step ``step``: a function of the images seen before it (step x batch), so a resumed
        run averages exactly as an uninterrupted one."""
        return ema_beta(self.batch_size, self.ema_kimg, self.ema_rampup, images_seen=step * self.batch_size)

    def __call__(self, step: int, real: torch.Tensor, classes: torch.Tensor | None = None) -> list[dict[str, torch.Tensor]]:
        """Run training step ``step`` (which phases are due depends on it).

        Args:
            real: the batch as network tensor, on the model's device.
            classes: class-conditional models only: each case's class index (-1: unknown), same device.

        Returns:
            The detached losses of every phase that ran, in order.
        """
        losses = []
        ema_source_stepped = False
        for phase in self.model.phases():
            if not phase.due(step):
                continue
            optimizer = self.optimizers[phase.optimizer]
            optimizer.zero_grad(set_to_none=True)
            with self._autocast(real.device):
                losses.append(self.model.accumulate_gradients(phase.name, real, classes=classes))
            optimizer.step()
            self.model.after_optimizer_step(phase.name)
            ema_source_stepped |= phase.optimizer == self.model.ema_target
        if ema_source_stepped:  # once per step, even when a lazy regulariser also updated the network
            self.model.update_ema(self.ema_beta(step))
        return losses

    def _autocast(self, device: torch.device):
        if device.type == "cuda" and self.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


class Trainer:
    """A training run: data from the manifest, `TrainStep` on scheduled batches, logs, checkpoints, resume.

    Watching (rank 0): sample grids every ``train.sample_every`` steps, and with ``train.fidelity_every`` the
    figure of the monitor ``monitor_factory`` builds (`synthmed.train.watch`), logged like the losses; the
    checkpoint with the lowest figure so far is kept as ``checkpoints/best.pt``.
    """

    def __init__(self, config: RunConfig, resume: bool = False, monitor_factory: MonitorFactory | None = None) -> None:
        self.config = config
        self.run_dir = Path(config.out)
        self.env = init_distributed("cuda" if config.train.device != "cpu" and torch.cuda.is_available() else "cpu")
        self.device = select_device(config.train.device, self.env)
        self.manifest = load_manifest(config.data.manifest)
        refuse_overlap(self.run_dir, [self.manifest.root], allow_containing=True)  # a run never writes into its data
        resume_state = self._read_resume_state() if resume else None  # refuses a resume that changes the run
        self._load_data()
        torch.manual_seed(config.train.seed)  # identical initial weights on every rank
        self.model: GenerativeModel = build_model(config.model.name, config.model.params, self.data_info).to(self.device)
        self._check_conditioning()
        self.optimizers = self._make_optimizers()
        self.step_runner = TrainStep(self.model, self.optimizers, config.train)
        self.monitor = self._make_monitor(monitor_factory)
        self.best: dict | None = None  # {"key", "value", "step"} of checkpoints/best.pt
        self.step = 0
        self.losses = LossAccumulator()
        if resume_state is not None:
            self._restore(resume_state)
        else:
            self._start_new_run()
        self.schedule = BatchSchedule(len(self.ids), config.train.batch_size, config.train.seed, self.env)
        self._wrap_networks()

    # --- set-up ---------------------------------------------------------------------------------
    def _load_data(self) -> None:
        data = self.config.data
        self.ids = self.manifest.split_ids(data.split, fold=data.fold)
        if not self.ids:
            raise UserError(f"{self.manifest.path}: split {data.split!r} has no cases to train on")
        images, masks = load_arrays(self.manifest, self.ids)
        self.images, self.masks = torch.from_numpy(images), torch.from_numpy(masks)
        self.data_info = DataInfo(tuple(images.shape[2:]), images.shape[1], len(self.manifest.labels))
        self.class_names: list[str] | None = None
        self.classes: torch.Tensor | None = None
        if data.class_key:
            self.class_names, self.classes = case_classes(self.manifest, self.ids, data.class_key, data.classes)

    def _check_conditioning(self) -> None:
        can, name = self.model.capabilities, self.config.model.name
        if can.class_conditional and self.classes is None:
            raise UserError(f"data.class_key: model {name!r} is conditional; name the case field holding the class")
        if not can.class_conditional and self.classes is not None:
            raise UserError(f"data.class_key: model {name!r} is not conditional; remove data.class_key")
        if can.class_conditional and len(self.class_names) != can.num_classes:
            raise UserError(f"model.params.num_classes is {can.num_classes} but data.class_key "
                            f"{self.config.data.class_key!r} gives {len(self.class_names)} classes {self.class_names}")

    def _make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        nets, given = set(self.model.nets), set(self.config.optim)
        if nets != given:
            raise UserError(
                f"optim: model {self.config.model.name!r} has networks {sorted(nets)}; "
                f"the config gives optimisers for {sorted(given)}"
            )
        return {k: make_optimizer(self.config.optim[k], self.model.nets[k].parameters()) for k in sorted(nets)}

    def _make_monitor(self, factory: MonitorFactory | None) -> TrainingMonitor | None:
        """The fidelity monitor (rank 0, when ``train.fidelity_every`` is set), built without touching the RNG.

        Raises:
            UserError: ``train.fidelity_every`` is set but no monitor factory was given.
        """
        if self.config.train.fidelity_every is None or not self.env.is_main:
            return None
        if factory is None:
            raise UserError("train.fidelity_every: this caller trains without a fidelity monitor; run `synthmed train` "
                            "or synthmed.train(), or remove train.fidelity_every")
        context = MonitorContext(self.config, self.manifest, self.images.numpy(), self.masks.numpy())
        with _isolated_rng():
            return factory(context)

    def _manifest_record(self) -> dict[str, str]:
        return {"path": str(self.manifest.path), "sha256": self.manifest.sha256}

    def _start_new_run(self) -> None:
        if ckpt.list_checkpoints(self.run_dir):
            raise UserError(f"{self.run_dir}: run folder already has checkpoints; pass --resume or choose another out")
        config = self.config.model_dump(mode="json")
        self.history = [history_entry("start", 0, self._manifest_record(), self.ids, config=config)]
        self._write_run_files()
        torch.manual_seed(self.config.train.seed + 1 + self.env.rank)  # different noise on every rank

    def _read_resume_state(self) -> dict:
        """The newest checkpoint, once `check_resume` has accepted the changes this resume makes."""
        if not ckpt.list_checkpoints(self.run_dir):
            raise UserError(f"{self.run_dir}: nothing to resume (no checkpoints in {self.run_dir / 'checkpoints'})")
        state = ckpt.load_newest_checkpoint(
            self.run_dir, map_location=self.device,
            use_older="to resume from it, delete {newest} (or move it out of the checkpoints folder) and resume again")
        self.resume_changes = check_resume(self.run_dir, state, self.config.model_dump(mode="json"), self._manifest_record())
        return state

    def _restore(self, state: dict) -> None:
        ckpt.load_model_weights(self.model, state)
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        self.losses.load_state_dict(state["losses"])
        self.model.load_extra_state(state.get("extra", {}))
        self.best = state.get("best")
        self.step = state["step"]
        self.history = checkpoint_history(state) + [
            history_entry("resume", self.step, self._manifest_record(), self.ids, changes=self.resume_changes)]
        self._write_run_files()
        if self.env.is_main:
            ckpt.restore_rng(state["rng"])
        else:  # RNG state is saved for rank 0 only; other ranks reseed deterministically
            torch.manual_seed(self.config.train.seed + 1 + self.env.rank + 7919 * self.step)

    def _write_run_files(self) -> None:
        """``config.yaml`` (the configuration now in force) and ``history.jsonl`` (how the run got here).

        Raises:
            UserError: the run folder cannot be created or written.
        """
        if not self.env.is_main:
            return
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            ckpt.remove_unfinished_checkpoints(self.run_dir)
            atomic_write_text(self.run_dir / "config.yaml", config_to_yaml(self.config))
            write_history(self.run_dir, self.history)
        except OSError as err:
            raise UserError(f"{self.run_dir}: cannot write the run folder ({err.strerror or err})") from None
        log.info("%s: a checkpoint every %d steps; keeping the newest %d (train.keep_checkpoints), older ones are deleted",
                 self.run_dir, self.config.train.checkpoint_every, self.config.train.keep_checkpoints)

    def _wrap_networks(self) -> None:
        """Distributed: batch norm over the global batch (in place, so unwrapped calls share it), then DDP."""
        wrappers = []
        if self.env.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            wrappers.append(lambda net: synchronize_batch_norm(net, self.device))
            wrappers.append(lambda net: nn.parallel.DistributedDataParallel(net, device_ids=ids))
        if self.config.train.compile:
            wrappers.append(torch.compile)
        if wrappers:
            def wrap(net: nn.Module) -> nn.Module:
                for w in wrappers:
                    net = w(net)
                return net

            self.model.wrap(wrap)

    # --- the loop -------------------------------------------------------------------------------
    def train_step(self, step: int) -> None:
        """Step ``step`` on its scheduled batch (and the batch's classes, for class-conditional models)."""
        idx = self.schedule.indices(step)
        real = self.model.codec.encode(self.images[idx], self.masks[idx]).to(self.device, non_blocking=True)
        classes = None if self.classes is None else self.classes[idx].to(self.device)
        for losses in self.step_runner(step, real, classes):
            self.losses.add(losses)

    def run(self) -> Path:
        cfg = self.config.train
        logger = RunLogger(self.run_dir, resume_step=self.step) if self.env.is_main else None
        progress = _progress(self.step, cfg.steps, enabled=cfg.progress and self.env.is_main)
        started, window_start = time.perf_counter(), self.step
        try:
            while self.step < cfg.steps:
                self.train_step(self.step)
                self.step += 1
                progress.update(1)
                last = self.step == cfg.steps
                figures = self._watch(logger, last)
                if self.step % cfg.log_every == 0 or last:
                    record = {**self._record(started, window_start), **figures}
                    started, window_start = time.perf_counter(), self.step
                    if logger:
                        logger.log(record)
                        progress.set_postfix({k.split("/")[-1]: f"{v:.3f}" for k, v in record.items() if k.startswith("loss/")})
                elif figures and logger:
                    logger.log({"step": self.step, **figures})
                if figures:  # before the checkpoint of this step, which records the best so far
                    self._keep_if_best(figures)
                if self.step % cfg.checkpoint_every == 0 or last:
                    self._checkpoint()
            self._check_replicas_in_sync()
        finally:
            progress.close()
            if logger:
                logger.close()
        if self.env.is_main:
            plot_losses(self.run_dir / "metrics.jsonl", self.run_dir / "plots" / "losses.png")
            ckpt.export_generator(self.model, {**self._state(), "step": self.step}, self.run_dir / "generator.safetensors")
        return self.run_dir

    def _record(self, started: float, window_start: int) -> dict:
        elapsed = max(time.perf_counter() - started, 1e-9)
        steps = self.step - window_start
        record = {"step": self.step, "kimg": self.step * self.config.train.batch_size / 1000.0}
        record.update(self.losses.pop_means())
        record["sec_per_step"] = elapsed / max(steps, 1)
        record["images_per_sec"] = steps * self.config.train.batch_size / elapsed
        return record

    def _watch(self, logger: RunLogger | None, last: bool) -> dict[str, float]:
        """At their steps (rank 0): the sample grid (TensorBoard, samples/) and the monitor's figures (returned)."""
        cfg = self.config.train
        if logger and cfg.sample_every and (self.step % cfg.sample_every == 0 or last):
            with _isolated_rng():
                images, masks = draw_fixed_pairs(self.model, cfg.sample_count, self.masks.numpy())
            logger.log_image("samples", sample_grid(images, masks), self.step,
                             self.run_dir / "samples" / f"step_{self.step:08d}.png")
        if self.monitor is None or not (self.step % cfg.fidelity_every == 0 or last):
            return {}
        with _isolated_rng():
            return self.monitor.measure(self.model, self.step)

    def _keep_if_best(self, figures: dict[str, float]) -> None:
        """Write ``checkpoints/best.pt`` when the monitor's figure is the lowest so far (NaN never is)."""
        key = self.monitor.key
        value = figures[key]
        if value != value or (self.best is not None and value >= self.best["value"]):
            return
        self.best = {"key": key, "value": float(value), "step": self.step}
        ckpt.save_best_checkpoint(self.run_dir, self.step, self._state())
        log.info("%s: best %s so far (%.5g at step %d), written to checkpoints/best.pt", self.run_dir, key, value, self.step)

    def _checkpoint(self) -> None:
        if not self.env.is_main:
            return
        ckpt.save_checkpoint(self.run_dir, self.step, self._state(), keep=self.config.train.keep_checkpoints)
        plot_losses(self.run_dir / "metrics.jsonl", self.run_dir / "plots" / "losses.png")

    def _state(self) -> dict:
        """Everything a checkpoint holds (see `synthmed.train.checkpoint`)."""
        return {
            "synthmed_version": __version__,
            "config": self.config.model_dump(mode="json"),
            "data_info": self._data_info_record(),
            "data": {**data_record(self.manifest, self.ids), "classes": self.class_names},
            **ckpt.model_weights(self.model),
            "optimizers": {k: opt.state_dict() for k, opt in self.optimizers.items()},
            "losses": self.losses.state_dict(),
            "extra": self.model.extra_state(),
            "rng": ckpt.capture_rng(),
            "history": self.history,
            "best": self.best,
        }

    def _data_info_record(self) -> dict:
        info = self.data_info
        return {"shape": list(info.shape), "image_channels": info.image_channels, "num_labels": info.num_labels}

    def _check_replicas_in_sync(self) -> None:
        if self.env.enabled:
            divergence = max_replica_divergence(self.model.nets)
            if divergence > 1e-4:
                raise RuntimeError(f"replicas diverged across processes (max checksum difference {divergence})")


@contextlib.contextmanager
def _isolated_rng():
    """Run watching code without moving the run's RNG streams, so watching never changes the training."""
    state = ckpt.capture_rng()
    try:
        yield
    finally:
        ckpt.restore_rng(state)


def _progress(start: int, total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, disable=not enabled, unit="step", dynamic_ncols=True, leave=False)


def train(config: RunConfig, resume: bool = False, monitor_factory: MonitorFactory | None = None) -> Path:
    """Train (or with ``resume`` continue) the run ``config`` describes; returns the run folder.

    ``monitor_factory`` builds the fidelity monitor that ``train.fidelity_every`` needs
    (`synthmed.metrics.monitor.fidelity_monitor`; the train stage cannot import the metrics stage).
    """
    return Trainer(config, resume=resume, monitor_factory=monitor_factory).run()
