"""Our PPO vs TRL 1.12.0's `trl.experimental.ppo.PPOTrainer` (the last TRL with PPO), side by side in one run.

Both start from the tiny preset's SFT model and reward model (run the main job first, or pass --artifacts
and --dagster-home), with the same batch size, response length, PPO epochs, minibatches, learning rate, KL
coefficient and number of episodes. TRL 1.12 runs in its own virtual environment (created on first use
under var/bench-venvs/, from the package registry), since it conflicts with our pins. Prints samples/s,
reward gain per 1,000 samples (mean RM score of the last two rollout batches minus the first two) and peak
RSS of each, and the ratios; then ours again with only the top block training, with the hydra reference and
with a full frozen copy.

    .venv/bin/python -m bench.ppo_vs_trl [--episodes 512]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from rlhf_assets.presets import PROJECT_ROOT
from rlhf_assets.resources import ManifestRecordError, latest_artifact

TRL_VENV = PROJECT_ROOT / "var" / "bench-venvs" / "trl-1.12"


def ensure_trl_venv() -> Path:
    """The TRL 1.12.0 venv's Python, created with torch==2.13.0 first (CPU wheel, no CUDA packages)."""
    python = TRL_VENV / "bin" / "python"
    if not (TRL_VENV / ".ready").exists():
        subprocess.run([sys.executable, "-m", "venv", str(TRL_VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "torch==2.13.0"], check=True)
        subprocess.run([*pip, "trl==1.12.0", "pandas", "pyarrow"], check=True)
        (TRL_VENV / ".ready").write_text("trl==1.12.0\n")
    return python


def artifact(args: argparse.Namespace, asset: str) -> str:
    """An asset's verified artifact directory, as the main job's Dagster instance records it."""
    try:
        return str(latest_artifact(asset, dagster_home=str(args.dagster_home), artifact_root=str(args.artifacts))[1])
    except ManifestRecordError as error:
        raise SystemExit(f"{error} (run the main job, bash scripts/run_tiny.sh, first)") from None


def run_worker(python: str | Path, worker: str, spec: dict) -> dict:
    """Run one bench worker with the given interpreter and parse its JSON result line."""
    result = subprocess.run([str(python), str(PROJECT_ROOT / "bench" / worker), json.dumps(spec)],
                            capture_output=True, text=True, cwd=PROJECT_ROOT)
    if result.returncode:
        raise SystemExit(f"{worker} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def gain_per_1000(report: dict) -> float:
    """Reward gain per 1,000 samples: last two rollout batches' mean score minus the first two's."""
    scores = report["scores"]
    head, tail = scores[:2], scores[-2:]
    return (sum(tail) / len(tail) - sum(head) / len(head)) / report["episodes"] * 1000


def main() -> None:
    """Run both workers on the same spec and print their figures side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=PROJECT_ROOT / "var" / "artifacts")
    parser.add_argument("--dagster-home", type=Path, default=PROJECT_ROOT / "var" / "dagster_home")
    parser.add_argument("--episodes", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    spec = {
        "sft_dir": artifact(args, "sft_model"), "rm_dir": artifact(args, "reward_model"),
        "train_parquet": str(Path(artifact(args, "preference_dataset")) / "train.parquet"),
        "episodes": args.episodes, "batch_size": args.batch_size, "num_mini_batches": 2, "ppo_epochs": 2,
        "response_length": 32, "prompt_tokens": 128, "learning_rate": 5e-4, "kl_coef": 0.05, "seed": 1000,
    }
    trl_python = ensure_trl_venv()
    ours = run_worker(sys.executable, "ours_ppo_worker.py", spec)
    theirs = run_worker(trl_python, "trl_ppo_worker.py", spec)
    print(f"tiny preset, {args.episodes} episodes, batch {args.batch_size}, 2 minibatches, 2 PPO epochs, "
          f"32 response tokens, CPU")
    for name, report in (("ours", ours), ("TRL 1.12.0 PPOTrainer", theirs)):
        print(f"  {name:<22} {report['episodes'] / report['seconds']:6.2f} samples/s  "
              f"reward gain/1k samples {gain_per_1000(report):+.3f}  peak RSS {report['peak_rss_mb']:.0f} MB")
    ratio = (ours["episodes"] / ours["seconds"]) / (theirs["episodes"] / theirs["seconds"])
    print(f"  samples/s ratio ours / TRL: {ratio:.2f} (target >= 1.5)")
    print(f"  reward gain ours - TRL per 1k samples: {gain_per_1000(ours) - gain_per_1000(theirs):+.3f}")
    print("ours with only the top block training (num_layers_unfrozen=1), by reference kind:")
    for hydra in (True, False):
        report = run_worker(sys.executable, "ours_ppo_worker.py",
                            {**spec, "num_layers_unfrozen": 1, "hydra_reference": hydra})
        name = "hydra branch" if hydra else "full frozen copy"
        print(f"  {name:<22} {report['episodes'] / report['seconds']:6.2f} samples/s  "
              f"reward gain/1k samples {gain_per_1000(report):+.3f}  peak RSS {report['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
