"""2D cases cut from 3D volumes for `prepare.prepare_dataset`: slices or one slice mosaic per volume.

Each volume is checked as in 3D (`checks.load_checked_case`), preprocessed as in 3D (intensity, RAS,
spacing) and cut by `slices`. One case per slice (id ``<volume>_slice<index>``), or per volume one
mosaic (id ``<volume>``). The group of every slice is its volume's group (``group_regex`` matches the
volume id), so slices of one patient never straddle splits. The manifest's ``preprocessing`` has
``dims: 2``, ``input: "slices"`` or ``"mosaic"``, ``spacing_unit: "mm"``, ``bit_depth: 16`` and
``slicing`` (axis, volume spacing, ...); case entries name their ``volume_id`` and slice index(es).
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
    shape_2d,
    volume_modality,
)
from synthmed.data.checks import LoadedCase, load_checked_case
from synthmed.data.discover import CaseRecord, Source
from synthmed.data.prepare_options import DEFAULT_SHAPE_SLICES, PrepareOptions
from synthmed.data.preprocess import intensity_range
from synthmed.data.slices import (
    SLICE_AXES,
    PreparedVolume,
    mosaic_of_volume,
    prepare_volume,
    select_slices,
    slices_of_volume,
)
from synthmed.errors import UserError

log = logging.getLogger(__name__)

BIT_DEPTH_SLICES = 16  # slices of volumes: physical units need more than 256 levels


@dataclass(frozen=True)
class SliceSettings:
    """Where and how volumes are cut."""

    axis: int  # RAS axis
    shape: tuple[int, int]  # output (H, W)
    tile: tuple[int, int] | None  # mosaic tile (H, W); None: one case per slice


def slice_settings(options: PrepareOptions) -> SliceSettings:
    """The slicing axis, output shape and mosaic tile of `options`.

    Raises:
        UserError: a shape of other than 2 numbers, ``channels=3``, or a shape the mosaic grid does not divide.
    """
    axis = SLICE_AXES[options.slices or "axial"]
    shape = shape_2d(options, DEFAULT_SHAPE_SLICES)
    assert shape is not None
    if options.channels == 3:
        raise UserError("--channels 3: slices of volumes have one channel")
    if options.mosaic is None:
        return SliceSettings(axis, shape, None)
    rows, cols = options.mosaic
    if shape[0] % rows or shape[1] % cols:
        raise UserError(
            f"--shape {shape[0]} {shape[1]} is not divisible into a {rows} x {cols} mosaic; use a multiple, "
            f"e.g. --shape {rows * max(1, shape[0] // rows)} {cols * max(1, shape[1] // cols)}"
        )
    return SliceSettings(axis, shape, (shape[0] // rows, shape[1] // cols))


@dataclass
class SliceReader(CaseReader):
    """Checks 3D volumes and cuts each into slices or one mosaic; use `open_slices` to make one."""

    options: PrepareOptions
    declared: dict[int, str] | None
    settings: SliceSettings
    shape_mode: str
    modality: str
    intensity_mode: str  # "window" or "percentile"
    n_volumes: int
    unit = "volume"
    element = "pixel"
    no_slices: list[str] = field(default_factory=list)  # volumes that gave no slice

    def check(self, record: CaseRecord) -> LoadedCase:
        labels = set(self.declared) if self.declared else None
        case = load_checked_case(record, labels, self.options.crop_to_image)
        if case.image is not None and case.image.ndim == 4:
            case.problems.append(f"{record.image}: --slices / --mosaic take single-channel volumes; this image "
                                 f"has {case.image.shape[0]} channels (prepare it as 3D volumes)")
        return case

    def prepare(self, case: LoadedCase) -> list[PreparedCase]:
        assert case.image is not None and case.mask is not None and case.affine is not None
        assert case.spacing is not None
        options, axis = self.options, self.settings.axis
        lo, hi = intensity_range(case.image, self.intensity_mode, options.resolved_window(), options.percentiles)
        volume = prepare_volume(case.image, case.mask, case.affine, lo=lo, hi=hi, spacing=options.spacing,
                                axis=axis, margin=options.margin, crop=options.crop)
        max_slices = None if self.settings.tile else options.max_slices
        indices = select_slices(volume.mask, axis, options.foreground_slices_only, max_slices)
        if not indices:
            self.no_slices.append(case.record.id)
            return []
        fields = {
            "volume_id": case.record.id,
            **raw_files(case.record),
            "original_shape": list(case.image.shape),
            "original_spacing": [float(s) for s in case.spacing],
            "original_affine": case.affine.tolist(),
            "shape": list(self.settings.shape),
            "affine": None,
            "intensity": {"lo": float(lo), "hi": float(hi)},
            "label_voxels": {},
            "fixes": case.fixes + volume.notes,
        }
        if self.settings.tile is not None:
            return [self._mosaic(case.record.id, volume, indices, fields)]
        return self._slices(case.record.id, volume, indices, fields)

    def _mosaic(self, volume_id: str, volume: PreparedVolume, indices: list[int], fields: dict) -> PreparedCase:
        assert self.options.mosaic is not None and self.settings.tile is not None
        image, mask, used, spacing, lost = mosaic_of_volume(
            volume, self.settings.axis, indices, self.options.mosaic, self.settings.tile, self.shape_mode
        )
        return _slice_case(volume_id, image, mask, {**fields, "slice_indices": used}, spacing, lost)

    def _slices(self, volume_id: str, volume: PreparedVolume, indices: list[int], fields: dict) -> list[PreparedCase]:
        axis = self.settings.axis
        width = max(3, len(str(volume.mask.shape[axis] - 1)))
        return [
            _slice_case(f"{volume_id}_slice{s.index:0{width}d}", s.fitted.image, s.fitted.mask,
                        {**fields, "slice_index": s.index}, s.fitted.spacing, s.fitted.foreground_lost)
            for s in slices_of_volume(volume, axis, indices, self.settings.shape, self.shape_mode)
        ]

    def finish(self, tmp: Path, entries: list[dict]) -> dict:
        if self.no_slices:
            log.warning("%d volume(s) gave no slice (no labelled voxel): %s",
                        len(self.no_slices), ", ".join(self.no_slices[:10]))
        if not entries:
            raise UserError("no slices were taken (every volume has an empty mask and --foreground-slices-only is on)")
        options = self.options
        return {
            "dims": 2,
            "input": "mosaic" if self.settings.tile else "slices",
            "shape": list(self.settings.shape),
            "shape_mode": self.shape_mode,
            "channels": 1,
            "bit_depth": BIT_DEPTH_SLICES,
            "spacing": None,
            "spacing_unit": "mm",
            "modality": self.modality,
            "intensity": intensity_entry(self.intensity_mode, options.resolved_window(), options.percentiles, entries),
            "slicing": self._slicing_entry(),
        }

    def _slicing_entry(self) -> dict:
        options, tile = self.options, self.settings.tile
        return {
            "axis": options.slices or "axial",
            "ras_axis": self.settings.axis,
            "orientation": "RAS",
            "volume_spacing": None if options.spacing is None else [float(s) for s in options.spacing],
            "crop": options.crop,
            "foreground_margin": options.margin,
            "foreground_slices_only": options.foreground_slices_only,
            "max_slices": options.max_slices,
            "mosaic": None if tile is None or options.mosaic is None else {
                "rows": options.mosaic[0], "cols": options.mosaic[1], "tile": list(tile),
            },
        }

    def summary(self, n_empty: int) -> SummaryText:
        what = f"{'mosaics' if self.settings.tile else 'slices'} ({self.options.slices or 'axial'})"
        return SummaryText(cases=f"2D cases ({what} of {self.n_volumes} volumes)", details=f"{n_empty} empty mask(s).")


def _slice_case(
    case_id: str, image: np.ndarray, mask: np.ndarray, fields: dict, spacing: list[float], lost: int
) -> PreparedCase:
    """A slice or mosaic case: the volume's `fields`, then its spacing and the pixels lost to pad_crop."""
    fields = {**fields, "spacing": [float(s) for s in spacing], "foreground_lost_voxels": lost}
    return PreparedCase(case_id, image, mask, fields, empty=not mask.any())


def open_slices(sources: list[Source], options: PrepareOptions) -> SliceReader:
    """The reader that cuts the 3D volumes in `sources` into 2D cases.

    Raises:
        UserError: options that do not apply to slices, conflicting labels or modalities.
    """
    settings = slice_settings(options)
    shape_mode = options.resolved_shape_mode(3)
    declared = declared_labels(sources, options)
    modality = volume_modality(sources, options)
    intensity_mode = options.intensity or ("window" if modality.upper() == "CT" else "percentile")
    n_volumes = sum(len(s.cases) for s in sources)
    return SliceReader(options, declared, settings, shape_mode, modality, intensity_mode, n_volumes)
