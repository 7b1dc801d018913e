"""The Python API: `import synthmed` stays light, the stage functions run, the README script runs, and an
exported generator.safetensors loads with its provenance."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import synthmed
from synthmed.errors import UserError
from synthmed.train.checkpoint import load_checkpoint, load_generator
from synthmed.train.run_history import trained_case_ids

REPO = Path(__file__).resolve().parents[1]


def test_import_synthmed_loads_no_stage_and_no_torch():
    code = "import sys, synthmed; print(sorted(m for m in sys.modules if m.startswith(('torch', 'synthmed.'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_stage_functions_keep_the_stage_packages_reachable():
    assert callable(synthmed.train) and "run folder" in synthmed.train.__doc__
    import synthmed.train.loop as loop  # the package of the same name still imports, as before

    assert synthmed.train.loop is loop and synthmed.train.checkpoint.__name__ == "synthmed.train.checkpoint"
    assert callable(synthmed.train)  # importing the package did not replace the function
    for name in synthmed.API:
        assert getattr(synthmed, name).__doc__


def test_exported_generator_round_trips_with_its_provenance(toy_pipeline):
    run = toy_pipeline["run"]
    generator = synthmed.load_generator(run / "generator.safetensors")
    model, state = load_generator(run)
    images, masks = generator.sample(3, seed=5)
    expected_images, expected_masks = model.sample(3, seed=5)
    assert torch.equal(images, expected_images) and torch.equal(masks, expected_masks)
    again, _ = generator.sample_seeds([7])
    assert torch.equal(again, model.sample_seeds([7])[0])
    p = generator.provenance
    assert p["format"] == "synthmed-generator" and p["step"] == state["step"] == 4
    assert p["manifest_sha256"] == state["data"]["manifest_sha256"] and p["synthmed_version"] == synthmed.__version__
    assert p["trained_on_case_ids"] == trained_case_ids(load_checkpoint(run)) and p["trained_on_count"] == len(p["trained_on_case_ids"])
    assert p["config"] == state["config"] and p["model"] == state["config"]["model"]
    assert p["preprocessing"] == state["data"]["preprocessing"] and p["labels"] == state["data"]["labels"]


def test_a_file_that_is_no_generator_is_refused(tmp_path, toy_pipeline):
    with pytest.raises(UserError, match="not found"):
        synthmed.load_generator(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="not a readable safetensors"):
        synthmed.load_generator(junk)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(UserError, match="not a synthmed generator"):
        synthmed.load_generator(foreign)


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"<!-- api-example -->\n```python\n(.*?)```", text, re.S)
    assert match, "README.md: the Python API example (<!-- api-example -->) is missing"
    return match.group(1)


@pytest.mark.slow
def test_the_readme_script_runs(tmp_path, monkeypatch, capsys):
    code = readme_example().replace("STEPS = 600", "STEPS = 2").replace('"configs/', f'"{REPO}/configs/')
    code = code.replace('features=("autoencoder",)', 'features=("autoencoder",), ae_steps=5')  # the fit: 40 s -> 2 s
    assert "STEPS = 2" in code and "ae_steps=5" in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.strip().splitlines()[-1].split()  # the script's own last line
    card = json.loads((tmp_path / "work" / "synthetic" / "card.json").read_text())
    assert card["seeds"] == list(range(16)) and card["metrics"]  # evaluate filled the card
    assert printed[:2] == [str(len(card["trained_on_case_ids"])), "2"]
    assert printed[2:] == ["torch.Size([4,", "1,", "32,", "32,", "32])"]
