"""synthmed encode: a real pair mapped to HA-GAN's latent code, reconstructed and written."""

import argparse
import json

import nibabel as nib
import numpy as np
import pytest

from synthmed.errors import UserError
from synthmed.sample.cli import add_encode_parser
from synthmed.sample.encode import encode_to_folder
from synthmed.train.config import resolve_config
from synthmed.train.loop import train
from tests.models.test_hagan import tiny_config


def test_encode_writes_latent_and_reconstruction(toy_prepared, tmp_path):
    run = train(resolve_config(tiny_config(toy_prepared, tmp_path / "run", steps=2)))
    out = encode_to_folder(run, "toy_000", tmp_path / "enc")
    assert np.load(out / "latent.npy").shape == (16,)
    report = json.loads((out / "encode.json").read_text())
    assert 0 < report["recon_l1"] < 2 and 0 <= report["mask_agreement"] <= 1
    image = nib.load(out / "reconstruction" / "imagesTr" / "rec_0000_0000.nii.gz")
    assert image.shape == (16, 16, 16)

    with pytest.raises(UserError, match="needs its mask"):
        encode_to_folder(run, str(out / "reconstruction" / "imagesTr" / "rec_0000_0000.nii.gz"), tmp_path / "e2")
    with pytest.raises(UserError, match="no case with id 'nope'"):
        encode_to_folder(run, "nope", tmp_path / "e3")
    assert not (tmp_path / "e2").exists() and not (tmp_path / "e3").exists()


def test_encode_parser_sets_its_function():
    parser = argparse.ArgumentParser()
    add_encode_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["encode", "--checkpoint", "c", "--input", "toy_000", "--out", "o"])
    assert args.func.__name__ == "_run_encode" and args.mask is None
