"""The arms of a downstream benchmark: what each segmentation model is trained on.

The config lists arm kinds, synthetic counts, real-set sizes and augmentation settings; `expand_arms`
crosses them into concrete `ArmSpec`s. Every arm is tested on the same real test split.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from synthmed.downstream.config import ArmKind, DownstreamConfig


class MediganCategory:
    """The vocabulary medigan uses for what a downstream model saw."""

    REAL = "trained_on_real"
    REAL_AND_FAKE = "trained_on_real_and_fake"
    FAKE = "trained_on_fake"


@dataclass(frozen=True)
class ArmSpec:
    kind: ArmKind
    real_size: int | str | None  # real training cases per fold ("all"); None for synthetic-only
    n_synthetic: int  # 0 for real-only
    synthetic_set: str | None  # name in config.synthetic; None for real-only
    augment: bool

    @property
    def name(self) -> str:
        """A unique, file-system-safe name, e.g. ``real+synthetic-gan-n20-rall-aug``."""
        parts = [self.kind.value]
        if self.synthetic_set is not None:
            parts += [self.synthetic_set, f"n{self.n_synthetic}"]
        if self.real_size is not None:
            parts.append(f"r{self.real_size}")
        parts.append("aug" if self.augment else "noaug")
        return "-".join(parts)

    @property
    def uses_real(self) -> bool:
        return self.kind != ArmKind.SYNTHETIC

    @property
    def uses_synthetic(self) -> bool:
        return self.kind != ArmKind.REAL

    @property
    def category(self) -> str:
        if self.kind == ArmKind.REAL:
            return MediganCategory.REAL
        if self.kind == ArmKind.SYNTHETIC:
            return MediganCategory.FAKE
        return MediganCategory.REAL_AND_FAKE

    @property
    def label(self) -> str:
        """A reader's name, e.g. ``real + wgan × 100``, ``real (20) + augmentation``, ``wgan × 40 → real``."""
        real = "real" if self.real_size in (None, "all") else f"real ({self.real_size})"
        synthetic = f"{self.synthetic_set} × {self.n_synthetic}"
        text = {ArmKind.REAL: real if self.augment else f"{real} only", ArmKind.SYNTHETIC: f"{synthetic} only",
                ArmKind.REAL_SYNTHETIC: f"{real} + {synthetic}", ArmKind.PRETRAIN_FINETUNE: f"{synthetic} → {real}"}
        return text[self.kind] + (" + augmentation" if self.augment else "")

    @property
    def is_baseline(self) -> bool:
        return self.kind == ArmKind.REAL

    def baselines(self) -> dict[str, "ArmSpec"]:
        """The baselines this arm is compared with, by role: ``real_only`` (same real-set size, no
        augmentation) and ``real_augmentation`` (the same with classical augmentation). A synthetic-only
        arm is compared with the baselines on all real cases; real-only is compared with nothing."""
        real_size = self.real_size if self.real_size is not None else "all"
        out = {"real_only": ArmSpec(ArmKind.REAL, real_size, 0, None, False),
               "real_augmentation": ArmSpec(ArmKind.REAL, real_size, 0, None, True)}
        return {role: arm for role, arm in out.items() if arm != self and not (self.is_baseline and not self.augment)}

    def to_json(self) -> dict:
        d = asdict(self)
        d["kind"] = self.kind.value
        d.update(name=self.name, category=self.category, label=self.label, is_baseline=self.is_baseline)
        return d


def expand_arms(config: DownstreamConfig) -> list[ArmSpec]:
    """Every arm of the benchmark, baselines first, in a stable order.

    The baselines are always there: real-only for every real-set size (and for all real cases when a
    synthetic-only arm is run), and real + classical augmentation likewise whenever any arm uses it.
    """
    arms: set[ArmSpec] = set()
    for augment in config.with_augmentation:
        for kind in config.arms:
            real_sizes = [None] if kind == ArmKind.SYNTHETIC else config.real_sizes
            sets = [None] if kind == ArmKind.REAL else list(config.synthetic)
            counts = [0] if kind == ArmKind.REAL else sorted(config.n_synthetic)
            for real_size in real_sizes:
                for set_name in sets:
                    for n in counts:
                        arms.add(ArmSpec(kind, real_size, n, set_name, augment))
    baseline_sizes = set(config.real_sizes) | ({"all"} if ArmKind.SYNTHETIC in config.arms else set())
    for real_size in baseline_sizes:
        for augment in {False} | set(config.with_augmentation):
            arms.add(ArmSpec(ArmKind.REAL, real_size, 0, None, augment))
    order = {k: i for i, k in enumerate(ArmKind)}
    return sorted(arms, key=lambda a: (order[a.kind], a.augment, str(a.real_size), str(a.synthetic_set), a.n_synthetic))
