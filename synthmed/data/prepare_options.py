"""The options of `synthmed prepare` (`PrepareOptions`) and their defaults.

The options are shared by every kind of input; those that depend on the kind default to None and
are resolved by the case readers (`volume_reader`, `image_reader`, `slice_reader`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from synthmed.errors import UserError, format_problems, validation_problems

DEFAULT_SHAPE_3D = (64, 64, 64)
DEFAULT_SHAPE_SLICES = (64, 64)
DEFAULT_CT_WINDOW = (-1024.0, 600.0)


class PrepareOptions(BaseModel):
    """Options of `synthmed prepare` (the CLI flags of the same names).

    Options that depend on the kind of input default to None and are resolved per kind: see
    `resolved_shape`, `resolved_shape_mode` and `resolved_window`.
    """

    model_config = ConfigDict(extra="forbid")

    spacing: tuple[float, float, float] | None = None  # target voxel size in mm (3D, slices); None keeps it
    # target [D,H,W] for 3D, [H,W] for 2D; None: 64³ for 3D and slices 64x64, for 2D images their
    # common size (refused when sizes differ)
    shape: tuple[int, ...] | None = None
    # 3D: pad_crop | resize; 2D: resize | pad_resize | pad_crop; None: pad_crop for 3D and slices,
    # resize for 2D images
    shape_mode: Literal["pad_crop", "resize", "pad_resize"] | None = None
    intensity: Literal["window", "percentile"] | None = None  # None: window for CT and 2D, else percentile
    # raw values mapped to -1 and 1 (window mode); None: -1024..600 for 3D, for 2D 0..255 (8-bit)
    # or the data's own min..max (16-bit and other pixel types)
    window: tuple[float, float] | None = None
    percentiles: tuple[float, float] = (0.5, 99.5)  # per-case percentiles mapped to -1 and 1
    margin: int = Field(4, ge=0)  # voxels kept around the crop's bounding box
    # 3D and slices: crop to the mask's bounding box, to the image's nonzero voxels, or not at all
    crop: Literal["foreground", "nonzero", "none"] = "foreground"
    modality: str | None = None  # None: dataset.json's modality, else "CT" (3D) or "image" (2D)
    labels: dict[int, str] | None = None  # declared labels; None: dataset.json's, else those seen
    test_fraction: float = Field(0.2, ge=0, lt=1)  # fraction of cases held out for testing
    val_fraction: float = Field(0.1, ge=0, lt=1)  # fraction of cases for validation
    folds: int = Field(5, ge=0)  # k folds of the training cases (0: none)
    group_regex: str | None = None  # first capture group on the case id (slices: volume id) = group key
    seed: int = 0  # seed of the split
    split_file: Path | None = None  # JSON of ids per split, or nnU-Net's splits_final.json (see given_splits)
    mask_suffix: str | None = Field(None, min_length=1)  # masks named <image name><suffix>, e.g. "_Mask"
    crop_to_image: bool = False  # crop masks exceeding their image by <= 1 voxel per axis
    # --- 2D ---
    channels: Literal[1, 3] | None = None  # image channels; None: 3 if any image has colour, else 1
    mask_threshold: float | None = Field(None, ge=0)  # PNG/TIFF masks: label = value > this (binary); None: values are labels
    slices: Literal["axial", "coronal", "sagittal"] | None = None  # 2D cases from slices of 3D volumes
    mosaic: tuple[int, int] | None = None  # (rows, cols): one slice mosaic per volume instead
    foreground_slices_only: bool = False  # keep only slices holding labelled voxels
    max_slices: int | None = Field(None, ge=1)  # at most this many slices per volume (evenly spaced)

    @field_validator("spacing")
    @classmethod
    def _positive_spacing(cls, v: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        if v is not None and min(v) <= 0:
            raise ValueError(f"spacing must be positive, got {list(v)}")
        return v

    @field_validator("shape")
    @classmethod
    def _positive_shape(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and (len(v) not in (2, 3) or min(v) < 1):
            raise ValueError(f"shape must be 3 (D H W) or 2 (H W) positive integers, got {list(v)}")
        return v

    @field_validator("mosaic")
    @classmethod
    def _positive_grid(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and min(v) < 1:
            raise ValueError(f"mosaic needs rows and cols >= 1, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _ranges(self) -> PrepareOptions:
        if self.window is not None and not self.window[1] > self.window[0]:
            raise ValueError(f"window needs lo < hi, got {list(self.window)}")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"percentiles need 0 <= lower < upper <= 100, got {[lo, hi]}")
        if self.test_fraction + self.val_fraction >= 1:
            raise ValueError("test_fraction + val_fraction must be below 1")
        if self.folds == 1:
            raise ValueError("folds must be 0 (none) or at least 2")
        if self.labels is not None and 0 not in self.labels:
            raise ValueError("labels must include 0 (background)")
        if not self.slicing and (self.foreground_slices_only or self.max_slices is not None):
            raise ValueError("foreground_slices_only and max_slices need slices (or mosaic)")
        if self.mosaic is not None and self.max_slices is not None:
            raise ValueError("mosaic takes the central rows x cols slices; max_slices does not apply")
        return self

    @property
    def slicing(self) -> bool:
        """True when 2D cases are cut from 3D volumes (slices or mosaic)."""
        return self.slices is not None or self.mosaic is not None

    def resolved_shape_mode(self, dims: int) -> str:
        """The shape mode for inputs of `dims` (3: volumes or slices of volumes, 2: 2D images)."""
        if self.shape_mode is not None:
            return self.shape_mode
        return "resize" if dims == 2 and not self.slicing else "pad_crop"

    def resolved_window(self) -> tuple[float, float]:
        """The 3D window (CT default -1024..600 HU when none is given)."""
        return self.window if self.window is not None else DEFAULT_CT_WINDOW


def make_options(**kwargs) -> PrepareOptions:
    """`PrepareOptions(**kwargs)`, with validation errors turned into a `UserError` naming the key."""
    try:
        return PrepareOptions(**kwargs)
    except ValidationError as e:
        raise UserError(format_problems("Invalid prepare options", validation_problems(e))) from None
