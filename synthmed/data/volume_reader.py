"""3D volumes (NIfTI) for `prepare.prepare_dataset`: one prepared case per checked volume.

Each volume is checked by `checks.load_checked_case` and preprocessed by `preprocess.preprocess_case`
(RAS, optional resampling to ``spacing``, intensity window or percentiles to [-1, 1], foreground crop
with ``margin``, then ``shape`` by ``shape_mode``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synthmed.data.case_reader import (
    CaseReader,
    PreparedCase,
    SummaryText,
    declared_labels,
    intensity_entry,
    raw_files,
    volume_modality,
)
from synthmed.data.checks import LoadedCase, load_checked_case
from synthmed.data.discover import CaseRecord, Source
from synthmed.data.prepare_options import DEFAULT_SHAPE_3D, PrepareOptions
from synthmed.data.preprocess import preprocess_case
from synthmed.errors import UserError, format_problems

log = logging.getLogger(__name__)


def volume_settings(options: PrepareOptions) -> tuple[tuple[int, int, int], str]:
    """(shape, shape mode) for 3D volumes.

    Raises:
        UserError: listing the options that do not apply to 3D volumes.
    """
    problems = []
    shape = options.shape or DEFAULT_SHAPE_3D
    if len(shape) != 3:
        problems.append(f"--shape {' '.join(map(str, shape))}: 3D volumes need 3 numbers (D H W)")
    shape_mode = options.resolved_shape_mode(3)
    if shape_mode == "pad_resize":
        problems.append("--shape-mode pad_resize is for 2D images; 3D volumes take pad_crop or resize")
    if options.channels is not None:
        problems.append("--channels is for 2D images; 3D volumes take their channels from the files")
    if options.mask_threshold is not None:
        problems.append("--mask-threshold is for 2D masks (PNG, TIFF, JPEG); 3D masks hold integer labels")
    if problems:
        raise UserError(format_problems("Invalid options for 3D volumes", problems))
    return tuple(shape), shape_mode  # type: ignore[return-value]


@dataclass
class VolumeReader(CaseReader):
    """Checks and preprocesses 3D volumes; use `open_volumes` to make one."""

    options: PrepareOptions
    declared: dict[int, str] | None
    shape: tuple[int, int, int]
    shape_mode: str
    modality: str
    intensity_mode: str  # "window" or "percentile"
    declared_channels: list[str] | None = None  # channel names the sources declare (dataset.json)
    spacings: set[tuple[float, ...]] = field(default_factory=set)  # input voxel sizes, rounded
    lost: dict[str, int] = field(default_factory=dict)  # case id -> labelled voxels lost to the crop
    channel_names: list[str] | None = None  # per channel, set by the first case read
    channel_modes: list[str] = field(default_factory=list)  # intensity mode per channel

    def check(self, record: CaseRecord) -> LoadedCase:
        labels = set(self.declared) if self.declared else None
        case = load_checked_case(record, labels, self.options.crop_to_image)
        if case.image is not None:
            self._check_channels(case, 1 if case.image.ndim == 3 else case.image.shape[0])
        return case

    def _check_channels(self, case: LoadedCase, n: int) -> None:
        """Name the channels from the first case; a problem when a later case has another count."""
        if self.channel_names is None:
            self.channel_names = self._names(n)
            self.channel_modes = [
                self.options.intensity or ("window" if name.upper() == "CT" else "percentile")
                for name in self.channel_names
            ]
            if n > 1:
                log.info("%d channels %s, intensity %s", n, self.channel_names, self.channel_modes)
        if n != len(self.channel_names):
            case.problems.append(
                f"{case.record.image}: {n} channel(s), other cases {len(self.channel_names)} "
                f"(every case needs the same channels)"
            )

    def _names(self, n: int) -> list[str]:
        """Each channel's name (its modality, e.g. CT or FLAIR): --modality (one for all, or a
        comma list), else the names dataset.json declares, else the volumes' modality."""
        given = self.options.modality
        if given and "," in given:
            names = [m.strip() for m in given.split(",")]
            if len(names) != n:
                raise UserError(f"--modality {given}: {len(names)} names for images with {n} channels")
            return names
        if not given and self.declared_channels and len(self.declared_channels) == n:
            return list(self.declared_channels)
        return [self.modality] * n

    def prepare(self, case: LoadedCase) -> list[PreparedCase]:
        assert case.image is not None and case.mask is not None and case.affine is not None
        assert case.spacing is not None
        options = self.options
        self.spacings.add(tuple(np.round(case.spacing, 3)))
        pre = preprocess_case(
            case.image, case.mask, case.affine, spacing=options.spacing, shape=self.shape,
            shape_mode=self.shape_mode, intensity_mode=self.channel_modes, window=options.resolved_window(),
            percentiles=options.percentiles, margin=options.margin, crop=options.crop,
        )
        if pre.foreground_lost_voxels > 0:
            self.lost[case.record.id] = pre.foreground_lost_voxels
        fields = {
            **raw_files(case.record),
            "original_shape": list(case.image.shape),
            "original_spacing": [float(s) for s in case.spacing],
            "original_affine": case.affine.tolist(),
            "shape": list(pre.mask.shape),
            "spacing": pre.spacing,
            "affine": pre.affine.tolist(),
            "intensity": {"lo": pre.lo, "hi": pre.hi},
            "label_voxels": {},
            "foreground_lost_voxels": pre.foreground_lost_voxels,
            "fixes": case.fixes + pre.notes,
        }
        return [PreparedCase(case.record.id, pre.image, pre.mask, fields, empty=not (case.mask > 0).any())]

    def finish(self, tmp: Path, entries: list[dict]) -> dict:
        self._warn(len(entries))
        options = self.options
        preprocessing = {
            "dims": 3,
            "orientation": "RAS",
            "spacing": None if options.spacing is None else [float(s) for s in options.spacing],
            "shape": list(self.shape),
            "shape_mode": self.shape_mode,
            "crop": options.crop,
            "foreground_margin": options.margin,
            "modality": self.modality,
            "intensity": intensity_entry(
                (self.channel_modes or [self.intensity_mode])[0], options.resolved_window(), options.percentiles, entries
            ),
        }
        if self.channel_names and len(self.channel_names) > 1:
            preprocessing.update(self._channel_entries(entries))
        return preprocessing

    def _channel_entries(self, entries: list[dict]) -> dict:
        """The manifest's per-channel ``modality`` (names), ``channels`` and ``intensity``."""
        assert self.channel_names is not None
        per_channel = []
        for c, (name, mode) in enumerate(zip(self.channel_names, self.channel_modes)):
            ranges = [{"intensity": {"lo": e["intensity"]["lo"][c], "hi": e["intensity"]["hi"][c]}} for e in entries]
            entry = intensity_entry(mode, self.options.resolved_window(), self.options.percentiles, ranges)
            per_channel.append({"name": name, **entry})
        return {
            "channels": len(self.channel_names),
            "modality": list(self.channel_names),
            "intensity": {"mode": "per_channel", "channels": per_channel},
        }

    def _warn(self, n_cases: int) -> None:
        if self.lost:
            worst = max(self.lost, key=self.lost.get)  # type: ignore[arg-type]
            log.warning(
                "%d of %d cases lost labelled voxels to the crop to shape %s (%d voxels in all; most: "
                "%s, %d); use a larger --shape, a coarser --spacing or --shape-mode resize",
                len(self.lost), n_cases, "x".join(map(str, self.shape)), sum(self.lost.values()),
                worst, self.lost[worst],
            )
        if self.options.spacing is None and len(self.spacings) > 1:
            log.warning(
                "cases have %d different voxel spacings and --spacing is none: they are kept as they are",
                len(self.spacings),
            )

    def summary(self, n_empty: int) -> SummaryText:
        spacing = self.options.spacing
        spacing_text = "kept" if spacing is None else "x".join(f"{s:g}" for s in spacing) + " mm"
        return SummaryText(
            cases="cases",
            details=f"Shape {'x'.join(map(str, self.shape))} ({self.shape_mode}), spacing {spacing_text}, "
            f"intensity {self._intensity_text()}. {n_empty} empty mask(s); {len(self.lost)} case(s) lost "
            f"labelled voxels to the crop.",
        )


    def _intensity_text(self) -> str:
        names = self.channel_names or []
        if len(names) <= 1:
            return self.channel_modes[0] if self.channel_modes else self.intensity_mode
        return f"per channel ({', '.join(f'{n} {m}' for n, m in zip(names, self.channel_modes))})"


def open_volumes(sources: list[Source], options: PrepareOptions) -> VolumeReader:
    """The reader of the 3D volumes in `sources`.

    Raises:
        UserError: options that do not apply to volumes, conflicting labels or modalities.
    """
    shape, shape_mode = volume_settings(options)
    declared = declared_labels(sources, options)
    modality = volume_modality(sources, options)
    intensity_mode = options.intensity or ("window" if modality.upper() == "CT" else "percentile")
    if options.intensity is None:
        log.info("intensity mode %s (modality %s)", intensity_mode, modality)
    names = {tuple(s.channel_names) for s in sources if s.channel_names and len(s.channel_names) > 1}
    if len(names) > 1:
        raise UserError(f"inputs declare different channel_names {sorted(names)}; pass --modality NAME,NAME,...")
    return VolumeReader(options, declared, shape, shape_mode, modality, intensity_mode,
                        declared_channels=list(names.pop()) if names else None)
