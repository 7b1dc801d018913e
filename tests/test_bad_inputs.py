"""Every stage refuses bad input the same way: exit code 2, one ``synthmed <verb>: error:`` message that
names the offending file, folder or key, no traceback, no output left and every input untouched.

`CASES` is the table (stage, bad input, builder); README's "What synthmed refuses" lists the same rows.
Each builder makes its bad input in the test's own folder (copying what it damages from the shared,
module-scoped fixtures) and returns the command line and the name the message must contain.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from synthmed.cli import main
from synthmed.data.manifest import load_manifest
from synthmed.data.prepare import PrepareOptions, prepare_dataset
from synthmed.data.toy import write_toy_dataset
from synthmed.data.toy_channels import write_toy_channels
from synthmed.data.toy2d import prepare_toy_2d, write_toy_2d_dataset
from synthmed.fileio import write_output_marker
from synthmed.sample.sampler import sample_to_folder
from synthmed.train.checkpoint import list_checkpoints
from synthmed.train.config import resolve_config
from synthmed.train.loop import train
from synthmed.vtt.invite import invite
from synthmed.vtt.study import StudyOptions, create_study
from tests.conftest import TOY_OPTIONS
from tests.data.test_channels_2d import write_toy_channels_2d
from tests.data.test_checks import _rewrite
from tests.sphere_sets import write_sphere_set
from tests.train.test_training import tiny_config

PREPARE = ["--shape", "16", "16", "16", "--test-fraction", "0.2", "--val-fraction", "0.1", "--folds", "0"]
HAGAN = {"latent_dim": 8, "feature_channels": 8, "g_max_channels": 8, "d_channels": 4, "d_max_channels": 8}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> SimpleNamespace:
    """Shared inputs, never changed by a case: a raw toy MSD folder (12 cases, 16³), its prepared folder
    (3 folds), a prepared 2D set, a dcgan3d run of 4 steps (checkpoints at 2 and 4), a set sampled from it
    and a vtt study with one rater."""
    root = tmp_path_factory.mktemp("bad_inputs")
    raw = write_toy_dataset(root / "raw", layout="msd")
    manifest = prepare_dataset([raw], root / "prepared", PrepareOptions(**TOY_OPTIONS), progress=False)
    manifest_2d = prepare_toy_2d(root / "toy2d", n=12, size=32)
    config = tiny_config(manifest, root / "run", steps=4)
    config["train"]["checkpoint_every"] = 2
    run = train(resolve_config(config))
    synthetic = sample_to_folder(run, 4, root / "synthetic")
    study = create_study(f"{manifest}:test", [synthetic], root / "study", StudyOptions(n=2, seed=0))
    invite(study, ["MD1"])
    return SimpleNamespace(root=root, raw=raw, manifest=manifest, prepared=manifest.parent, manifest_2d=manifest_2d,
                           run=run, synthetic=synthetic, study=study)


# --- helpers of the builders ----------------------------------------------------------------------------


def copy(src: Path, tmp: Path, name: str | None = None) -> Path:
    return Path(shutil.copytree(src, tmp / (name or src.name)))


def truncate(path: Path, keep: int | None = None) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])
    return path


def run_config(w, tmp: Path, manifest: Path | None = None, out: Path | None = None, **model) -> Path:
    """A tiny dcgan3d (or `model`) training config in `tmp`; returns its path."""
    config = tiny_config(manifest or w.manifest, out or tmp / "run", steps=2)
    if model:
        config["model"] = model
        config["optim"] = {k: {} for k in (["G", "D", "E"] if model["name"] == "hagan" else ["G", "D"])}
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def downstream_config(w, tmp: Path, synthetic_set: Path | None = None, **extra) -> Path:
    config = {"manifest": str(w.prepared), "synthetic": {"toy": str(synthetic_set or w.synthetic)},
              "arms": ["real", "real+synthetic"], "n_synthetic": [2], "folds": 2, "out": str(tmp / "out"),
              "train": {"epochs": 1, "model_size": "tiny", "progress": False}, **extra}
    path = tmp / "downstream.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def foreign_folder(tmp: Path) -> Path:
    folder = tmp / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    return folder


def set_without_card(w, tmp: Path) -> Path:
    folder = copy(w.synthetic, tmp, "nocard")
    (folder / "card.json").unlink()
    return folder


def partial_set(w, tmp: Path) -> Path:
    return copy(w.synthetic, tmp, ".synthetic.abcd1234.partial")


def sample_args(w, tmp: Path, *extra) -> list:
    return ["sample", "--checkpoint", w.run, "-n", 1, "--out", tmp / "syn", *extra]


def evaluate_args(w, tmp: Path, synthetic: Path | None = None, real: str | None = None, *extra) -> list:
    return ["evaluate", "--real", real or str(w.prepared), "--synthetic", synthetic or w.synthetic,
            "--out", tmp / "eval", "--features", "radiomics", "--offline", "--no-card", *extra]


def vtt_create_args(w, tmp: Path, synthetic: Path | None = None, real: str | None = None, n: int = 2) -> list:
    return ["vtt", "create", "--real", real or f"{w.prepared}:test", "--synthetic", synthetic or w.synthetic,
            "--n", n, "--out", tmp / "study"]


# --- prepare / analyze ---------------------------------------------------------------------------------


def prepare_damaged(w, tmp, damage) -> tuple[list, str]:
    raw = copy(w.raw, tmp)
    name = damage(raw)
    return ["prepare", raw, "--out", tmp / "out", *PREPARE], str(name)


def truncated_nifti(w, tmp):
    return prepare_damaged(w, tmp, lambda raw: truncate(raw / "imagesTr" / "toy_003.nii.gz"))


def garbage_nifti(w, tmp):
    def damage(raw):
        path = raw / "labelsTr" / "toy_004.nii.gz"
        path.write_bytes(b"not a nifti file at all")
        return path
    return prepare_damaged(w, tmp, damage)


def shape_mismatch(w, tmp):
    def damage(raw):
        path = raw / "labelsTr" / "toy_001.nii.gz"
        _rewrite(path, image=np.zeros((16, 18, 16), np.uint8))
        return path
    return prepare_damaged(w, tmp, damage)


def affine_mismatch(w, tmp):
    def damage(raw):
        import nibabel as nib
        path = raw / "labelsTr" / "toy_002.nii.gz"
        affine = nib.load(path).affine.copy()
        affine[0, 3] += 0.5
        _rewrite(path, affine=affine)
        return path
    return prepare_damaged(w, tmp, damage)


def channel_geometry_mismatch(w, tmp):
    import nibabel as nib
    raw = write_toy_channels(tmp / "raw_mc", n_cases=4)
    path = raw / "imagesTr" / "mc_001_0001.nii.gz"
    affine = nib.load(path).affine.copy()
    affine[2, 3] += 0.5
    _rewrite(path, affine=affine)
    return ["prepare", raw, "--out", tmp / "out", "--shape", "16", "16", "16", "--folds", "0"], str(path)


def channel_count_mismatch(w, tmp):
    raw = write_toy_channels(tmp / "raw_mc", n_cases=4, layout="msd4d")
    path = raw / "imagesTr" / "mc_002.nii.gz"
    _rewrite(path, image=np.zeros((16, 16, 16, 3), np.float32))
    return ["prepare", raw, "--out", tmp / "out", "--shape", "16", "16", "16", "--folds", "0"], str(path)


def channel_gap(w, tmp):
    raw = write_toy_channels(tmp / "raw_mc", n_cases=4)
    path = raw / "imagesTr" / "mc_003_0001.nii.gz"
    path.rename(path.with_name("mc_003_0002.nii.gz"))
    return ["prepare", raw, "--out", tmp / "out", "--shape", "16", "16", "16", "--folds", "0"], "mc_003_XXXX"


def channel_size_2d(w, tmp):
    from PIL import Image

    raw = write_toy_channels_2d(tmp / "raw2d_mc", "nnunet", n=4)
    path = raw / "imagesTr" / "c01_0001.png"
    Image.fromarray(np.full((24, 32), 3000, np.uint16)).save(path)
    return ["prepare", raw, "--out", tmp / "out", "--folds", "0"], str(path)


def channel_rgb_2d(w, tmp):
    from PIL import Image

    raw = write_toy_channels_2d(tmp / "raw2d_mc", "datalist", n=4)
    path = raw.parent / "imagesTr" / "c02_0001.png"
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(path)
    return ["prepare", raw, "--out", tmp / "out", "--folds", "0"], str(path)


def nan_voxels(w, tmp):
    def damage(raw):
        import nibabel as nib
        path = raw / "imagesTr" / "toy_005.nii.gz"
        data = np.asarray(nib.load(path).dataobj).astype(np.float32)
        data[0, 0, :3] = np.nan
        _rewrite(path, image=data)
        return path
    return prepare_damaged(w, tmp, damage)


def undeclared_label(w, tmp):
    def damage(raw):
        import nibabel as nib
        path = raw / "labelsTr" / "toy_006.nii.gz"
        data = np.asarray(nib.load(path).dataobj).copy()
        data[0, 0, 0] = 5
        _rewrite(path, image=data)
        return path
    return prepare_damaged(w, tmp, damage)


def too_few_cases(w, tmp):
    raw = write_toy_dataset(tmp / "raw3", n_cases=3)
    return ["prepare", raw, "--out", tmp / "out", "--shape", "16", "16", "16", "--folds", "5"], "--folds"


def bad_labels_option(w, tmp):
    return ["prepare", w.raw, "--out", tmp / "out", "--labels", "0,one", *PREPARE], "--labels"


def missing_input(w, tmp):
    return ["prepare", tmp / "nowhere", "--out", tmp / "out", *PREPARE], str(tmp / "nowhere")


def prepare_out_is_input(w, tmp):
    raw = copy(w.raw, tmp)
    return ["prepare", raw, "--out", raw, "--overwrite", *PREPARE], str(raw)


def prepare_out_inside_input(w, tmp):
    raw = copy(w.raw, tmp)
    return ["prepare", raw, "--out", raw / "prepared", *PREPARE], str(raw / "prepared")


def prepare_overwrite_foreign(w, tmp):
    return ["prepare", w.raw, "--out", foreign_folder(tmp), "--overwrite", *PREPARE], str(tmp / "mine")


def prepare_overwrite_other_kind(w, tmp):
    other = copy(w.synthetic, tmp, "other")  # written by `synthmed sample`
    return ["prepare", w.raw, "--out", other, "--overwrite", *PREPARE], str(other)


def prepare_out_under_file(w, tmp):
    (tmp / "a_file").write_text("x")
    return ["prepare", w.raw, "--out", tmp / "a_file" / "sub", *PREPARE], str(tmp / "a_file" / "sub")


def prepare_2d_grey_jpeg_mask(w, tmp):
    from PIL import Image
    raw = write_toy_2d_dataset(tmp / "raw2d", n=12, size=16)
    (raw / "masks" / "toy2d_000.png").unlink()
    ramp = np.tile(np.arange(16, dtype=np.uint8) * 16, (16, 1))
    Image.fromarray(ramp).save(raw / "masks" / "toy2d_000.jpg")
    return ["prepare", raw, "--out", tmp / "out", "--folds", "0"], str(raw / "masks" / "toy2d_000.jpg")


def prepare_2d_image_without_mask(w, tmp):
    raw = write_toy_2d_dataset(tmp / "raw2d", n=12, size=16)
    (raw / "masks" / "toy2d_002.png").unlink()
    return ["prepare", raw, "--out", tmp / "out", "--folds", "0"], str(raw / "images" / "toy2d_002.png")



def prepare_dicom(w, tmp, **damage) -> tuple[list, str]:
    """The toy set with toy_001's image as a DICOM series folder, broken by `damage`."""
    from tests.data.volume_files import nifti_to_dicom
    raw = copy(w.raw, tmp)
    image = raw / "imagesTr" / "toy_001.nii.gz"
    folder = nifti_to_dicom(image, raw / "imagesTr" / "toy_001", **{k: v for k, v in damage.items() if k != "series"})
    if "series" in damage:  # a second series in the same folder
        nifti_to_dicom(image, folder, series=damage["series"])
    image.unlink()
    return ["prepare", raw, "--out", tmp / "out", *PREPARE], str(folder)


def prepare_dicom_missing_slice(w, tmp):
    return prepare_dicom(w, tmp, drop=(7,))


def prepare_dicom_uneven_spacing(w, tmp):
    return prepare_dicom(w, tmp, shift={7: 0.6})


def prepare_dicom_two_series(w, tmp):
    return prepare_dicom(w, tmp, series="2")


def prepare_2d_suffixed_masks_without_mask_suffix(w, tmp):
    raw = write_toy_2d_dataset(tmp / "raw2d", n=12, size=16)
    for mask in (raw / "masks").glob("*.png"):
        mask.rename(mask.with_name(f"{mask.stem}_Mask.png"))
    return ["prepare", raw, "--out", tmp / "out", "--folds", "0"], "--mask-suffix _Mask would pair 12"


def prepare_group_in_two_given_splits(w, tmp):
    import json
    raw = write_toy_dataset(tmp / "raw_dl", n_cases=12, layout="datalist")
    data = json.loads(raw.read_text())
    data["validation"], data["testing"] = data["training"][8:10], data["training"][10:]
    data["training"] = data["training"][:8]
    data["validation"][0]["group"] = data["testing"][0]["group"] = "patient7"
    raw.write_text(json.dumps(data))
    return ["prepare", raw, "--out", tmp / "out", *PREPARE], "group 'patient7' is in test and val"


def prepare_split_file_unknown_ids(w, tmp):
    import json
    split = tmp / "split.json"
    split.write_text(json.dumps({"test": ["toy_000", "nobody"]}))
    return ["prepare", w.raw, "--out", tmp / "out", "--split-file", split, *PREPARE], f"--split-file {split}"


def prepare_2d_many_valued_masks(w, tmp):
    from PIL import Image
    raw = write_toy_2d_dataset(tmp / "raw2d", n=12, size=16)
    ramp = np.tile(np.arange(16, dtype=np.uint8) * 16, (16, 1))  # 16 grey levels
    Image.fromarray(ramp).save(raw / "masks" / "toy2d_000.png")
    return ["prepare", raw, "--out", tmp / "out", "--folds", "0"], str(raw / "masks" / "toy2d_000.png")


def analyze_out_inside_input(w, tmp):
    raw = copy(w.raw, tmp)  # (analyze reports unreadable cases in its table rather than refusing them)
    return ["analyze", raw, "--out", raw / "analysis"], str(raw / "analysis")


def analyze_missing_input(w, tmp):
    return ["analyze", tmp / "nowhere"], str(tmp / "nowhere")


# --- train / grid --------------------------------------------------------------------------------------


def train_set(w, tmp, override: str) -> list:
    return ["train", "--config", run_config(w, tmp), "--set", override]


def unknown_config_key(w, tmp):
    return train_set(w, tmp, "train.stepz=3"), "train.stepz: unknown key"


def bad_config_value(w, tmp):
    return train_set(w, tmp, "train.steps=many"), "train.steps"


def unknown_model(w, tmp):
    return train_set(w, tmp, "model.name=dcgan"), "model.name: unknown model 'dcgan'. Did you mean 'dcgan3d'?"


def bad_set_syntax(w, tmp):
    return train_set(w, tmp, "train.steps"), "--set 'train.steps'"


def missing_config_file(w, tmp):
    return ["train", "--config", tmp / "nope.yaml"], str(tmp / "nope.yaml")


def hagan_slab_depth(w, tmp):
    config = run_config(w, tmp, name="hagan", params=HAGAN)
    return ["train", "--config", config, "--set", "model.params.slab_depth=6"], "model.params.slab_depth"


def hagan_on_2d_data(w, tmp):
    return ["train", "--config", run_config(w, tmp, w.manifest_2d, name="hagan", params=HAGAN)], "model.name"


def train_truncated_case(w, tmp):
    prepared = copy(w.prepared, tmp)
    case = prepared / "cases" / f"{load_manifest(prepared).split_ids('train')[0]}.npz"
    truncate(case)
    return ["train", "--config", run_config(w, tmp, prepared / "manifest.json")], str(case)


def train_out_is_prepared(w, tmp):
    prepared = copy(w.prepared, tmp)
    config = run_config(w, tmp, prepared / "manifest.json", out=prepared)
    return ["train", "--config", config], str(prepared)


def train_out_inside_prepared(w, tmp):
    prepared = copy(w.prepared, tmp)
    config = run_config(w, tmp, prepared / "manifest.json", out=prepared / "runs" / "r1")
    return ["train", "--config", config], str(prepared / "runs" / "r1")


def resume_args(w, tmp, *overrides) -> tuple[list, Path]:
    run = copy(w.run, tmp)
    return ["train", "--resume", run, *[a for o in overrides for a in ("--set", o)], "--set", "train.steps=6"], run


def resume_other_manifest(w, tmp):
    other = prepare_dataset([w.raw], tmp / "prepared_seed1", PrepareOptions(**TOY_OPTIONS, seed=1), progress=False)
    argv, _ = resume_args(w, tmp, f"data.manifest={other}")
    return argv, f"-> {other}"


def resume_changed_latent_dim(w, tmp):
    return resume_args(w, tmp, "model.params.latent_dim=32")[0], "model.params.latent_dim: 16 -> 32"


def resume_changed_lr(w, tmp):
    return resume_args(w, tmp, "optim.G.lr=0.001")[0], "optim.G.lr: 0.0002 -> 0.001"


def resume_without_checkpoints(w, tmp):
    argv, run = resume_args(w, tmp)
    shutil.rmtree(run / "checkpoints")
    return argv, str(run / "checkpoints")


def resume_garbage_checkpoint(w, tmp):
    argv, run = resume_args(w, tmp)
    older, newest = list_checkpoints(run)
    older.unlink()
    newest.write_bytes(b"hello world" * 10)
    return argv, str(newest)


def resume_truncated_checkpoint(w, tmp):
    argv, run = resume_args(w, tmp)
    older, newest = list_checkpoints(run)
    truncate(newest, 5000)
    return argv, f"the previous checkpoint {older}"


def grid_unknown_key(w, tmp):
    grid = tmp / "grid.yaml"
    grid.write_text(yaml.safe_dump({"train.stepz": [1, 2]}))
    return ["grid", "--config", run_config(w, tmp), "--grid", grid, "--out", tmp / "grid"], "train.stepz"


def grid_not_a_list(w, tmp):
    grid = tmp / "grid.yaml"
    grid.write_text(yaml.safe_dump({"optim.G.lr": 0.001}))
    return ["grid", "--config", run_config(w, tmp), "--grid", grid, "--out", tmp / "grid"], "optim.G.lr"


# --- sample / encode -----------------------------------------------------------------------------------


def sample_cuda_without_cuda(w, tmp):
    return sample_args(w, tmp, "--device", "cuda"), "--device cuda"


def sample_zero_pairs(w, tmp):
    argv = sample_args(w, tmp)
    argv[argv.index("-n") + 1] = 0
    return argv, "-n"


def sample_trunc_without_truncation(w, tmp):
    return sample_args(w, tmp, "--trunc", "0.7"), "--trunc"


def sample_masks_for_unconditional(w, tmp):
    return sample_args(w, tmp, "--masks", w.synthetic), "--masks"


def sample_garbage_checkpoint(w, tmp):
    bad = tmp / "bad.pt"
    bad.write_bytes(b"hello world" * 10)
    return ["sample", "--checkpoint", bad, "-n", 1, "--out", tmp / "syn"], str(bad)


def sample_truncated_checkpoint(w, tmp):
    run = copy(w.run, tmp)
    newest = truncate(list_checkpoints(run)[-1], 1000)
    return ["sample", "--checkpoint", run, "-n", 1, "--out", tmp / "syn"], str(newest)


def sample_out_is_run(w, tmp):
    run = copy(w.run, tmp)
    return ["sample", "--checkpoint", run, "-n", 1, "--out", run, "--overwrite"], str(run)


def sample_out_inside_run(w, tmp):
    run = copy(w.run, tmp)
    return ["sample", "--checkpoint", run, "-n", 1, "--out", run / "syn"], str(run / "syn")


def sample_overwrite_foreign(w, tmp):
    return [*sample_args(w, tmp)[:-2], "--out", foreign_folder(tmp), "--overwrite"], str(tmp / "mine")


def sample_out_under_file(w, tmp):
    (tmp / "a_file").write_text("x")
    argv = sample_args(w, tmp)
    argv[argv.index("--out") + 1] = tmp / "a_file" / "sub"
    return argv, str(tmp / "a_file" / "sub")


def encode_without_encoder(w, tmp):
    case = load_manifest(w.manifest).split_ids("train")[0]
    argv = ["encode", "--checkpoint", w.run, "--input", case, "--out", tmp / "enc"]
    return argv, str(list_checkpoints(w.run)[-1])


# --- evaluate ------------------------------------------------------------------------------------------


def evaluate_missing_mask(w, tmp):
    synthetic = copy(w.synthetic, tmp)
    mask = sorted((synthetic / "labelsTr").iterdir())[1]
    mask.unlink()
    return evaluate_args(w, tmp, synthetic), f"{mask}: mask missing"


def evaluate_partial_set(w, tmp):
    synthetic = partial_set(w, tmp)
    return evaluate_args(w, tmp, synthetic), str(synthetic)


def evaluate_unknown_split(w, tmp):
    return evaluate_args(w, tmp, real=f"{w.prepared}:tets"), "'tets'"


def evaluate_unknown_feature_space(w, tmp):
    argv = evaluate_args(w, tmp)
    argv[argv.index("--features") + 1] = "radiomicz"
    return argv, "'radiomicz'"


def evaluate_out_is_synthetic(w, tmp):
    synthetic = copy(w.synthetic, tmp)
    argv = evaluate_args(w, tmp, synthetic, None, "--overwrite")
    argv[argv.index("--out") + 1] = synthetic
    return argv, str(synthetic)


def evaluate_overwrite_foreign(w, tmp):
    argv = evaluate_args(w, tmp, None, None, "--overwrite")
    argv[argv.index("--out") + 1] = foreign_folder(tmp)
    return argv, str(tmp / "mine")


def evaluate_missing_manifest(w, tmp):
    return evaluate_args(w, tmp, real=str(tmp / "noprep")), str(tmp / "noprep")


def pair_folder(w, tmp: Path, name: str, n: int | None = None) -> Path:
    """`n` cases of the sampled set as another tool lays them out: images/ + masks/ with matching names."""
    folder = tmp / name
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for mask in sorted((w.synthetic / "labelsTr").glob("*.nii.gz"))[:n]:
        shutil.copy(mask, folder / "masks" / mask.name)
        shutil.copy(w.synthetic / "imagesTr" / mask.name.replace(".nii.gz", "_0000.nii.gz"), folder / "images" / mask.name)
    return folder


def evaluate_pairs_missing_mask(w, tmp):
    synthetic = pair_folder(w, tmp, "maisi")
    mask = sorted((synthetic / "masks").iterdir())[0]
    mask.unlink()
    return evaluate_args(w, tmp, synthetic), f"{mask}: mask missing for image {mask.name}"


def evaluate_real_folder_one_case(w, tmp):
    real = pair_folder(w, tmp, "real_pairs", n=1)
    return evaluate_args(w, tmp, None, str(real)), f"--real {real}: 1 case(s); at least 2 needed"


def evaluate_cuda_without_gpu(w, tmp):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: --device cuda is not refused here")
    return evaluate_args(w, tmp, None, None, "--device", "cuda"), "--device cuda: torch sees no CUDA GPU"


def evaluate_zero_workers(w, tmp):
    return evaluate_args(w, tmp, None, None, "--workers", "0"), "workers must be >= 1, got 0"


def evaluate_cache_dir_under_file(w, tmp):
    (tmp / "file").write_text("x")
    return evaluate_args(w, tmp, None, None, "--cache-dir", tmp / "file" / "cache"), f"--cache-dir {tmp / 'file' / 'cache'}"


# --- downstream ----------------------------------------------------------------------------------------


def downstream_set_without_card(w, tmp):
    synthetic = set_without_card(w, tmp)
    return ["downstream", "--config", downstream_config(w, tmp, synthetic)], str(synthetic)


def downstream_leakage(w, tmp):
    manifest = load_manifest(w.manifest)
    leaked = manifest.split_ids("test")[0]
    synthetic = write_sphere_set(tmp / "leaky", w.manifest, n=4, trained_on=[*manifest.split_ids("train"), leaked])
    return ["downstream", "--config", downstream_config(w, tmp, synthetic)], leaked


def downstream_extra_labels(w, tmp):
    manifest = load_manifest(w.manifest)
    synthetic = write_sphere_set(tmp / "wide", w.manifest, n=4, trained_on=manifest.split_ids("train"))
    return ["downstream", "--config", downstream_config(w, tmp, synthetic, real_sizes=[2])], "label-budget guard"


def downstream_unknown_key(w, tmp):
    return ["downstream", "--config", downstream_config(w, tmp), "--set", "train.epochz=2"], "train.epochz"


def downstream_too_many_synthetic(w, tmp):
    return ["downstream", "--config", downstream_config(w, tmp, n_synthetic=[9])], "n_synthetic"


def downstream_no_folds(w, tmp):
    manifest = prepare_dataset([w.raw], tmp / "nofolds", PrepareOptions(**{**TOY_OPTIONS, "folds": 0}), progress=False)
    config = downstream_config(w, tmp, manifest=str(manifest), synthetic={}, arms=["real"])
    return ["downstream", "--config", config], f"{manifest}: the manifest has 0 folds"


def downstream_out_is_synthetic(w, tmp):
    synthetic = copy(w.synthetic, tmp)
    config = downstream_config(w, tmp, synthetic)
    return ["downstream", "--config", config, "--out", synthetic, "--overwrite"], str(synthetic)


def downstream_out_inside_prepared(w, tmp):
    prepared = copy(w.prepared, tmp)
    config = downstream_config(w, tmp, manifest=str(prepared))
    return ["downstream", "--config", config, "--out", prepared / "bench"], str(prepared / "bench")


def downstream_overwrite_foreign(w, tmp):
    config = downstream_config(w, tmp)
    return ["downstream", "--config", config, "--out", foreign_folder(tmp), "--overwrite"], str(tmp / "mine")


def downstream_resume_into_foreign(w, tmp):
    config = downstream_config(w, tmp)
    return ["downstream", "--config", config, "--out", foreign_folder(tmp)], str(tmp / "mine")


def downstream_overwrite_other_kind(w, tmp):
    other = tmp / "evaluation"
    other.mkdir()
    (other / "metrics.json").write_text("{}")
    write_output_marker(other, "evaluate", ["metrics.json"])
    config = downstream_config(w, tmp)
    return ["downstream", "--config", config, "--out", other, "--overwrite"], str(other)


# --- vtt -----------------------------------------------------------------------------------------------


def vtt_create_set_without_card(w, tmp):
    synthetic = set_without_card(w, tmp)
    return vtt_create_args(w, tmp, synthetic), str(synthetic)


def vtt_create_odd_n(w, tmp):
    return vtt_create_args(w, tmp, n=3), "--n 3"


def vtt_create_partial_set(w, tmp):
    synthetic = partial_set(w, tmp)
    return vtt_create_args(w, tmp, synthetic), str(synthetic)


def vtt_create_unknown_split(w, tmp):
    return vtt_create_args(w, tmp, real=f"{w.prepared}:tets"), "'tets'"


def vtt_create_out_is_synthetic(w, tmp):
    synthetic = copy(w.synthetic, tmp)
    argv = vtt_create_args(w, tmp, synthetic)
    argv[argv.index("--out") + 1] = synthetic
    return [*argv, "--overwrite"], str(synthetic)


def vtt_invite_not_a_study(w, tmp):
    folder = foreign_folder(tmp)
    return ["vtt", "invite", "--study", folder, "MD2"], str(folder / "study.json")


def vtt_invite_already_invited(w, tmp):
    study = copy(w.study, tmp)
    return ["vtt", "invite", "--study", study, "MD1"], "'MD1': already invited"


def vtt_analyze_without_ratings(w, tmp):
    study = copy(w.study, tmp)
    return ["vtt", "analyze", "--study", study], str(study)


def vtt_analyze_out_is_study(w, tmp):
    study = copy(w.study, tmp)
    return ["vtt", "analyze", "--study", study, "--out", study, "--overwrite"], str(study)


# --- demo ----------------------------------------------------------------------------------------------


def demo_out_foreign(w, tmp):
    return ["demo", "--out", foreign_folder(tmp)], str(tmp / "mine")


def demo_out_under_file(w, tmp):
    (tmp / "a_file").write_text("x")
    return ["demo", "--out", tmp / "a_file" / "demo"], str(tmp / "a_file" / "demo")


# --- export --------------------------------------------------------------------------------------------


def export_args(w, tmp: Path, *synthetic: Path, out: Path | None = None) -> list:
    sets = [a for s in (synthetic or [w.synthetic]) for a in ("--synthetic", s)]
    return ["export", "nnunet", "--manifest", w.prepared, *sets, "--out", out or tmp / "raw"]


def export_leakage(w, tmp):
    manifest = load_manifest(w.manifest)
    leaked = manifest.split_ids("test")[0]
    synthetic = write_sphere_set(tmp / "leaky", w.manifest, n=4, trained_on=[*manifest.split_ids("train"), leaked])
    return export_args(w, tmp, synthetic), leaked


def export_set_without_card(w, tmp):
    synthetic = set_without_card(w, tmp)
    return export_args(w, tmp, synthetic), str(synthetic)


def export_other_manifest(w, tmp):
    synthetic = write_sphere_set(tmp / "other", w.manifest, n=4, manifest_sha="f" * 64)
    return export_args(w, tmp, synthetic), str(synthetic / "card.json")


def export_too_many_synthetic(w, tmp):
    return [*export_args(w, tmp), "-n", 9], f"{w.synthetic}: -n 9"


def export_duplicate_dataset_id(w, tmp):
    (tmp / "raw" / "Dataset501_Other").mkdir(parents=True)
    return export_args(w, tmp), str(tmp / "raw" / "Dataset501_Other")


def export_bad_name(w, tmp):
    return [*export_args(w, tmp), "--name", "my data"], "--name 'my data'"


def export_out_inside_prepared(w, tmp):
    return export_args(w, tmp, out=w.prepared), str(w.prepared)


def export_overwrite_foreign(w, tmp):
    foreign = tmp / "raw" / "Dataset501_toy"
    foreign.mkdir(parents=True)
    (foreign / "thesis.tex").write_text("years of work")
    return [*export_args(w, tmp), "--overwrite"], str(foreign)
# --- report --------------------------------------------------------------------------------------------


def report_not_a_synthmed_folder(w, tmp):
    return ["report", w.raw], str(w.raw)


def report_empty_folder(w, tmp):
    (tmp / "empty").mkdir()
    return ["report", tmp / "empty"], str(tmp / "empty")


def report_prepared_folder(w, tmp):
    return ["report", w.prepared], str(w.prepared)


def report_out_a_file_synthmed_did_not_write(w, tmp):
    (tmp / "notes.html").write_text("<p>mine</p>")
    return ["report", w.run, "--out", tmp / "notes.html"], str(tmp / "notes.html")


def report_out_inside_the_reported_folder(w, tmp):
    return ["report", w.run, "--out", w.run / "report.html"], str(w.run / "report.html")
# --- study ---------------------------------------------------------------------------------------------


def study_yaml(w, tmp, **changes) -> Path:
    raw = {"data": {"prepared": str(w.prepared)}, "real_sizes": [3], "n_samples": 4,
           "generators": {"g": {"preset": str(Path(__file__).parents[1] / "configs" / "dcgan3d_32.yaml"), "steps": 2}},
           "downstream": {"n_synthetic": [4]}, **changes}
    (tmp / "study.yaml").write_text(yaml.safe_dump(raw))
    return tmp / "study.yaml"


def study_unknown_key(w, tmp):
    gen = {"g": {"preset": "configs/dcgan3d_32.yaml", "stepz": 2}}
    return ["study", "--config", study_yaml(w, tmp, generators=gen), "--out", tmp / "s"], "generators.g.stepz: unknown key"


def study_real_size_too_big(w, tmp):
    return ["study", "--config", study_yaml(w, tmp, real_sizes=[50]), "--out", tmp / "s"], "real_sizes: 50"


def study_out_foreign(w, tmp):
    return ["study", "--config", study_yaml(w, tmp), "--out", foreign_folder(tmp)], str(tmp / "mine")


# --- the table -----------------------------------------------------------------------------------------

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")

CASES = [
    ("prepare", "truncated NIfTI", truncated_nifti),
    ("prepare", "a file that is not NIfTI", garbage_nifti),
    ("prepare", "mask shape differs from image shape", shape_mismatch),
    ("prepare", "mask affine differs from image affine", affine_mismatch),
    ("prepare", "a channel file off its mask's geometry", channel_geometry_mismatch),
    ("prepare", "cases with different channel counts", channel_count_mismatch),
    ("prepare", "nnU-Net channel files with a gap (_0000, _0002)", channel_gap),
    ("prepare", "2D: a channel file off its mask's size", channel_size_2d),
    ("prepare", "2D: an RGB channel file", channel_rgb_2d),
    ("prepare", "NaN voxels", nan_voxels),
    ("prepare", "mask label outside the declared labels", undeclared_label),
    ("prepare", "too few cases for the split (3 cases, 5 folds)", too_few_cases),
    ("prepare", "bad --labels syntax", bad_labels_option),
    ("prepare", "input folder missing", missing_input),
    ("prepare", "--out equal to the input", prepare_out_is_input),
    ("prepare", "--out inside the input", prepare_out_inside_input),
    ("prepare", "--overwrite on a folder synthmed did not write", prepare_overwrite_foreign),
    ("prepare", "--overwrite on a folder another command wrote", prepare_overwrite_other_kind),
    ("prepare", "--out under a regular file (unwritable)", prepare_out_under_file),
    ("prepare", "2D: grey JPEG mask", prepare_2d_grey_jpeg_mask),
    ("prepare", "2D: image without mask", prepare_2d_image_without_mask),
    ("prepare", "DICOM series with a missing slice", prepare_dicom_missing_slice),
    ("prepare", "DICOM series with uneven slice spacing", prepare_dicom_uneven_spacing),
    ("prepare", "two DICOM series in one folder", prepare_dicom_two_series),
    ("prepare", "2D: masks named <image>_Mask without --mask-suffix", prepare_2d_suffixed_masks_without_mask_suffix),
    ("prepare", "one group in two given splits", prepare_group_in_two_given_splits),
    ("prepare", "--split-file naming unknown ids", prepare_split_file_unknown_ids),
    ("prepare", "2D: mask with more than 10 values", prepare_2d_many_valued_masks),
    ("analyze", "--out inside the input", analyze_out_inside_input),
    ("analyze", "input folder missing", analyze_missing_input),
    ("train", "unknown config key", unknown_config_key),
    ("train", "bad config value", bad_config_value),
    ("train", "unknown model name", unknown_model),
    ("train", "--set without =", bad_set_syntax),
    ("train", "config file missing", missing_config_file),
    ("train", "HA-GAN slab_depth not a multiple of 4", hagan_slab_depth),
    ("train", "HA-GAN on 2D data", hagan_on_2d_data),
    ("train", "truncated cases/*.npz", train_truncated_case),
    ("train", "--out equal to the prepared folder", train_out_is_prepared),
    ("train", "--out inside the prepared folder", train_out_inside_prepared),
    ("train", "resume with another manifest", resume_other_manifest),
    ("train", "resume with another latent_dim", resume_changed_latent_dim),
    ("train", "resume with another learning rate", resume_changed_lr),
    ("train", "resume without checkpoints", resume_without_checkpoints),
    ("train", "resume from a garbage checkpoint", resume_garbage_checkpoint),
    ("train", "resume from a truncated newest checkpoint", resume_truncated_checkpoint),
    ("grid", "unknown key in the grid", grid_unknown_key),
    ("grid", "grid value not a list", grid_not_a_list),
    pytest.param("sample", "--device cuda without CUDA", sample_cuda_without_cuda, marks=no_cuda),
    ("sample", "-n 0", sample_zero_pairs),
    ("sample", "--trunc on a model without truncation", sample_trunc_without_truncation),
    ("sample", "--masks for a model that is not mask-conditional", sample_masks_for_unconditional),
    ("sample", "garbage checkpoint file", sample_garbage_checkpoint),
    ("sample", "truncated newest checkpoint", sample_truncated_checkpoint),
    ("sample", "--out equal to the run folder", sample_out_is_run),
    ("sample", "--out inside the run folder", sample_out_inside_run),
    ("sample", "--overwrite on a folder synthmed did not write", sample_overwrite_foreign),
    ("sample", "--out under a regular file (unwritable)", sample_out_under_file),
    ("encode", "a model without an encoder", encode_without_encoder),
    ("evaluate", "synthetic set with a missing mask file", evaluate_missing_mask),
    ("evaluate", "a .partial synthetic set", evaluate_partial_set),
    ("evaluate", "unknown split :tets", evaluate_unknown_split),
    ("evaluate", "unknown feature space", evaluate_unknown_feature_space),
    ("evaluate", "--out equal to the synthetic set", evaluate_out_is_synthetic),
    ("evaluate", "--overwrite on a folder synthmed did not write", evaluate_overwrite_foreign),
    ("evaluate", "manifest missing", evaluate_missing_manifest),
    ("evaluate", "images/ + masks/ folder: an image without its mask", evaluate_pairs_missing_mask),
    ("evaluate", "--real folder of pairs with one case", evaluate_real_folder_one_case),
    ("evaluate", "--device cuda where torch sees no GPU", evaluate_cuda_without_gpu),
    ("evaluate", "--workers 0", evaluate_zero_workers),
    ("evaluate", "--cache-dir under a regular file", evaluate_cache_dir_under_file),
    ("downstream", "synthetic set without card.json", downstream_set_without_card),
    ("downstream", "leakage: the card lists a test case", downstream_leakage),
    ("downstream", "generator saw real cases the arm does not", downstream_extra_labels),
    ("downstream", "unknown config key", downstream_unknown_key),
    ("downstream", "n_synthetic larger than the set", downstream_too_many_synthetic),
    ("downstream", "manifest without folds", downstream_no_folds),
    ("downstream", "--out equal to a synthetic set", downstream_out_is_synthetic),
    ("downstream", "--out inside the prepared folder", downstream_out_inside_prepared),
    ("downstream", "--overwrite on a folder synthmed did not write", downstream_overwrite_foreign),
    ("downstream", "--out a non-empty folder synthmed did not write", downstream_resume_into_foreign),
    ("downstream", "--overwrite on a folder another command wrote", downstream_overwrite_other_kind),
    ("vtt", "create: synthetic set without card.json", vtt_create_set_without_card),
    ("vtt", "create: odd --n", vtt_create_odd_n),
    ("vtt", "create: a .partial synthetic set", vtt_create_partial_set),
    ("vtt", "create: unknown split :tets", vtt_create_unknown_split),
    ("vtt", "create: --out equal to the synthetic set", vtt_create_out_is_synthetic),
    ("vtt", "invite: folder is not a study", vtt_invite_not_a_study),
    ("vtt", "invite: rater already invited", vtt_invite_already_invited),
    ("vtt", "analyze: no ratings yet", vtt_analyze_without_ratings),
    ("vtt", "analyze: --out equal to the study", vtt_analyze_out_is_study),
    ("export", "leakage: the card lists a test case", export_leakage),
    ("export", "synthetic set without card.json", export_set_without_card),
    ("export", "synthetic set from another manifest", export_other_manifest),
    ("export", "-n larger than a synthetic set", export_too_many_synthetic),
    ("export", "dataset id already used in --out", export_duplicate_dataset_id),
    ("export", "--name with a space", export_bad_name),
    ("export", "--out inside the prepared folder", export_out_inside_prepared),
    ("export", "--overwrite on a folder synthmed did not write", export_overwrite_foreign),
    ("study", "unknown key in the study YAML", study_unknown_key),
    ("study", "a real-set size larger than the train split", study_real_size_too_big),
    ("study", "--out a folder that is not a study folder", study_out_foreign),
    ("demo", "--out a folder an earlier demo did not write", demo_out_foreign),
    ("demo", "--out under a regular file (unwritable)", demo_out_under_file),
    ("report", "not a synthmed folder", report_not_a_synthmed_folder),
    ("report", "empty folder", report_empty_folder),
    ("report", "a prepared folder (nothing to report)", report_prepared_folder),
    ("report", "--out a file synthmed did not write", report_out_a_file_synthmed_did_not_write),
    ("report", "--out inside the reported folder", report_out_inside_the_reported_folder),
]


def _case_id(case) -> str:
    return case.values[2].__name__ if hasattr(case, "values") else case[2].__name__


# --- the test ------------------------------------------------------------------------------------------


def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every file and folder under `roots`: folders by name, files with size and modification time."""
    found = {}
    for root in roots:
        for path in root.rglob("*"):
            stat = path.lstat()
            found[str(path)] = ("dir",) if path.is_dir() else (stat.st_size, stat.st_mtime_ns)
    return found


def run_cli(argv: list, capsys) -> tuple[int, str]:
    """Run `synthmed ARGV` in this process: (exit code, stderr); argparse's usage errors exit via SystemExit."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("stage,what,build", CASES, ids=[_case_id(c) for c in CASES])
def test_bad_input_is_refused_cleanly(stage, what, build, world, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # a command writing relative to the working folder would show up here too
    argv, name = build(world, tmp_path)
    assert argv[0] == stage
    before = snapshot(tmp_path, world.root)

    code, err = run_cli(argv, capsys)

    prefix = f"synthmed {stage}: error:"
    assert code == 2, err
    assert "Traceback" not in err, err
    message = err[err.find(prefix):] if err.startswith("usage:") else err  # argparse prints its usage first
    assert message.startswith(prefix), err
    assert name in message, f"{name!r} not named in: {message}"
    assert snapshot(tmp_path, world.root) == before, "output left behind or an input changed"


def test_the_table_covers_every_stage_and_the_readme_lists_each_row():
    rows = [tuple(c.values[:2]) if hasattr(c, "values") else c[:2] for c in CASES]
    assert len(rows) >= 40
    assert {s for s, _ in rows} == {"prepare", "analyze", "train", "grid", "sample", "encode", "evaluate",
                                    "downstream", "vtt", "export", "report", "study", "demo"}
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## What synthmed refuses")[1].split("\n## ")[0]
    listed = [tuple(cell.strip().replace("`", "") for cell in line.split("|")[1:3])
              for line in section.splitlines() if line.startswith("| ") and not line.startswith("| stage")]
    assert listed == rows
