"""Diffusion vs GANs on real data with an equal CPU budget: Fréchet distances, montages, sampling cost.

From the raw datasets: ``synthmed prepare`` (hippocampus at 1.5 mm, 32³, percentile intensities;
Kvasir-SEG resized to 64²), then per model: a warm-up that measures the *process CPU seconds* of one
training step (the trainer's own `TrainStep`, one torch thread, after one untimed step), ``train.steps``
set to ``budget / (CPU s/step)``, ``synthmed train`` (one thread), ``synthmed sample -n N`` (diffusion:
``--steps`` sampler steps), ``synthmed evaluate --real PREP:test --features radiomics autoencoder``
and a montage (real test cases above the synthetic ones). CPU seconds, not wall seconds, are the
budget because the machine is shared: a run's wall time depends on the other jobs, its CPU time much
less. The CPU seconds each training process really used (``os.wait4``; start-up, data loading and
checkpoints included) are printed beside the budget.

    python benchmarks/compare_generators.py --hippocampus RAW/msd_hippocampus --kvasir RAW/kvasir_seg \\
        --work /tmp/cmp --budget 300 --samples 32
    python benchmarks/compare_generators.py ... --datasets hippocampus   # one dataset (run two in parallel)

Outputs under ``--work``: ``prep/``, ``runs/<model>``, ``syn/<model>``, ``eval/<model>``,
``montage_<model>.png``, ``results_<dataset>.json``; each finished stage is skipped on a rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
# dataset -> (prepare options, prepared folder name)
PREPARE = {
    "hippocampus": (["--intensity", "percentile", "--spacing", "1.5", "1.5", "1.5", "--shape", "32", "32", "32",
                     "--modality", "MRI", "--labels", "0=background,1=anterior,2=posterior", "--seed", "0"], "hippo32"),
    "kvasir": (["--shape", "64", "64", "--seed", "0"], "kvasir64"),
}
# dataset -> [(label, preset, --set overrides)]
MODELS = {
    "hippocampus": [("wgan3d_gp_32", "wgan3d_gp_32", []),
                    ("diffusion_joint_32_ddpm", "diffusion_joint_32",
                     ["model.params.scheduler=ddpm", "model.params.prediction=v_prediction", "model.params.sampler=ddim"]),
                    ("diffusion_joint_32_rflow", "diffusion_joint_32",
                     ["model.params.scheduler=rflow", "model.params.prediction=null", "model.params.sampler=rflow"]),
                    # a trial setting (README: worse than the preset at 300 CPU s): no self-attention, lr 2e-3
                    ("diffusion_joint_32_noattn_lr2e-3", "diffusion_joint_32",
                     ["model.params.attention_levels=[false,false,false]", "optim.unet.lr=2.0e-3"])],
    "kvasir": [("dcgan2d_64", "dcgan2d_64", []), ("diffusion_2d_64", "diffusion_2d_64", [])],
}


def synthmed(*args: str) -> tuple[float, float]:
    """Run ``python -m synthmed.cli ARGS`` on one thread; (wall seconds, CPU seconds of the child)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "synthmed.cli", *args], env=ENV)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"synthmed {args[0]} failed with exit code {proc.returncode}")
    return time.perf_counter() - start, usage.ru_utime + usage.ru_stime


def resolved_config(preset: str, overrides: list[str]) -> dict:
    config = yaml.safe_load((CONFIGS / f"{preset}.yaml").read_text())
    for item in overrides:
        key, value = item.split("=", 1)
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = yaml.safe_load(value)
    return config


def cpu_seconds_per_step(preset: str, overrides: list[str], prepared: Path, steps: int) -> float:
    """Median process CPU seconds of a training step (fresh process, one thread, one untimed step first)."""
    code = f"""
import json, statistics, sys, time, torch
torch.set_num_threads(1)
sys.path.insert(0, {str(REPO / 'benchmarks')!r})
from step_timing import time_training_steps
from synthmed.data.dataset import load_arrays
from synthmed.data.manifest import load_manifest
from synthmed.models.registry import DataInfo, build_model
from synthmed.train.config import TrainSection
config = json.loads({json.dumps(json.dumps(resolved_config(preset, overrides)))})
manifest = load_manifest({str(prepared)!r})
batch = config["train"]["batch_size"]
images, masks = load_arrays(manifest, manifest.split_ids("train")[:batch])
torch.manual_seed(0)
model = build_model(config["model"]["name"], config["model"].get("params", {{}}),
                    DataInfo(tuple(masks.shape[1:]), images.shape[1], len(manifest.labels)))
opts = {{k: torch.optim.Adam(n.parameters(), lr=1e-4) for k, n in model.nets.items()}}
real = model.codec.encode(torch.from_numpy(images), torch.from_numpy(masks))
clock = time.perf_counter
time.perf_counter = time.process_time  # time_training_steps times with perf_counter: make it CPU time
times = time_training_steps(model, opts, real, warmup=1, steps={steps},
                            train=TrainSection(batch_size=batch, ema_kimg=config["train"]["ema_kimg"]))
print(statistics.median(times))
"""
    done = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"warm-up of {preset} failed:\n{done.stderr}")
    return float(done.stdout.strip().splitlines()[-1])


def frechet_table(metrics_json: Path) -> dict[str, dict[str, float | None]]:
    """{"images/radiomics": {"fd": .., "ref": ..}, ...} from an evaluate metrics.json."""
    doc = json.loads(metrics_json.read_text())
    out = {}
    for modality in ("images", "masks"):
        for space, entry in doc[modality].items():
            syn = (entry or {}).get("synthetic_vs_real") if isinstance(entry, dict) else None
            if syn:
                ref = entry.get("real_train_vs_real_test") or {}
                out[f"{modality}/{space}"] = {"fd": syn["frechet_distance"]["value"],
                                              "ref": (ref.get("frechet_distance") or {}).get("value")}
    return out


def montage(prepared: Path, synthetic: Path, path: Path, title: str) -> None:
    from synthmed.data.dataset import load_arrays
    from synthmed.data.manifest import load_manifest
    from synthmed.sample.montage import save_montage
    from synthmed.sample.synthetic_set import load_synthetic_set

    manifest = load_manifest(prepared)
    real_images, real_masks = load_arrays(manifest, manifest.split_ids("test")[:8])
    shape = tuple(manifest.preprocessing["shape"])
    syn_images, syn_masks, _ = load_synthetic_set(synthetic, shape, indices=list(range(8)))
    save_montage(path, [("real (test)", real_images, real_masks), (title, syn_images, syn_masks)], n_cols=8,
                 labels={str(k): v for k, v in manifest.labels.items()})


def run_model(args, dataset: str, label: str, preset: str, overrides: list[str], prepared: Path) -> dict:
    work = args.work
    run, syn, ev = work / "runs" / label, work / "syn" / label, work / "eval" / label
    result_file = work / "results" / f"{label}.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    if run.exists():  # an unfinished run of this script: train refuses an existing folder
        shutil.rmtree(run)
    diffusion = preset.startswith("diffusion")
    cpu_step = cpu_seconds_per_step(preset, overrides, prepared, args.warmup_steps)
    steps = max(1, int(args.budget / cpu_step))
    print(f"[{label}] {cpu_step:.3f} CPU s/step -> {steps} steps for {args.budget:.0f} CPU s", flush=True)
    sets = [f"{o}" for o in overrides] + [f"data.manifest={prepared}", f"train.steps={steps}",
                                          f"train.checkpoint_every={steps}", "train.progress=false"]
    train_wall, train_cpu = synthmed("train", "--config", str(CONFIGS / f"{preset}.yaml"),
                                     *[a for s in sets for a in ("--set", s)], "--out", str(run))
    sample_args = ["--steps", str(args.diffusion_steps)] if diffusion else []
    sample_wall, sample_cpu = synthmed("sample", "--checkpoint", str(run), "-n", str(args.samples), "--seed", "0",
                                       *sample_args, "--out", str(syn), "--overwrite")
    eval_wall, _ = synthmed("evaluate", "--real", f"{prepared}:test", "--synthetic", str(syn), "--out", str(ev),
                            "--features", "radiomics", "autoencoder", "--bootstrap", str(args.bootstrap),
                            "--ae-steps", str(args.ae_steps), "--overwrite")
    montage(prepared, syn, work / f"montage_{label}.png", label)
    result = {"dataset": dataset, "model": label, "preset": preset, "overrides": overrides,
              "cpu_s_per_step": cpu_step, "steps": steps, "budget_cpu_s": args.budget,
              "train_cpu_s": train_cpu, "train_wall_s": train_wall,
              "sample_n": args.samples, "sample_cpu_s_per_case": sample_cpu / args.samples,
              "sample_wall_s": sample_wall, "eval_wall_s": eval_wall, "frechet": frechet_table(ev / "metrics.json")}
    result_file.parent.mkdir(parents=True, exist_ok=True)
    result_file.write_text(json.dumps(result, indent=1))
    return result


def print_table(results: list[dict]) -> None:
    spaces = ["images/radiomics", "images/autoencoder", "masks/radiomics", "masks/autoencoder"]
    head = " | ".join(f"{s} FD (real ref)" for s in spaces)
    print(f"| data | model | CPU s/step | steps | train CPU s | train wall s | sample CPU s/case | {head} |")
    print("|" + "---|" * (7 + len(spaces)))
    for r in results:
        # "images/radiomics/volume", "masks/autoencoder_2d/image", ... -> "images/radiomics", ...
        table = {"/".join(k.replace("_2d", "").split("/")[:2]): v for k, v in r["frechet"].items()}
        cells = []
        for s in spaces:
            v = table.get(s)
            cells.append("-" if v is None else f"{v['fd']:.3g} ({v['ref']:.3g})" if v["ref"] is not None else f"{v['fd']:.3g}")
        print(f"| {r['dataset']} | {r['model']} | {r['cpu_s_per_step']:.3f} | {r['steps']} | {r['train_cpu_s']:.0f} | "
              f"{r['train_wall_s']:.0f} | {r['sample_cpu_s_per_case']:.2f} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hippocampus", type=Path, help="raw MSD Task04 Hippocampus folder")
    parser.add_argument("--kvasir", type=Path, help="raw Kvasir-SEG folder (images/, masks/)")
    parser.add_argument("--work", type=Path, required=True, help="output folder (prepared data, runs, sets, PNGs)")
    parser.add_argument("--datasets", nargs="+", default=["hippocampus", "kvasir"], choices=sorted(MODELS))
    parser.add_argument("--models", nargs="+", help="labels to run (default: all of each dataset)")
    parser.add_argument("--budget", type=float, default=300.0, help="training budget per model, process CPU seconds")
    parser.add_argument("--warmup-steps", type=int, default=3, help="timed steps of the CPU s/step warm-up")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--diffusion-steps", type=int, default=25, help="sampler steps of the diffusion models")
    parser.add_argument("--bootstrap", type=int, default=20, help="subsamples for the Fréchet confidence intervals")
    parser.add_argument("--ae-steps", type=int, default=150, help="autoencoder feature space training steps")
    args = parser.parse_args()
    results = []
    for dataset in args.datasets:
        raw = getattr(args, dataset)
        if raw is None:
            parser.error(f"--{dataset} is required for dataset {dataset}")
        options, name = PREPARE[dataset]
        prepared = args.work / "prep" / name
        if not (prepared / "manifest.json").is_file():
            synthmed("prepare", str(raw), "--out", str(prepared), *options)
        chosen = {m[0]: m for m in MODELS[dataset]}
        for label in args.models or list(chosen):  # in the order given
            if label in chosen:
                results.append(run_model(args, dataset, *chosen[label], prepared))
    print_table(results)
    (args.work / f"results_{'_'.join(args.datasets)}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
