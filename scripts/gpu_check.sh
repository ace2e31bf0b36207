#!/usr/bin/env bash
# GPU checks of our PPO (run on a CUDA machine with torch, transformers, accelerate and peft; DeepSpeed and
# pydantic may come as wheels in .whl/).
# 1. Memory plan (issue 14): a GPT-J-architecture model with 4 blocks (~1.2 B parameters, random weights) runs a
#    few PPO steps with the gptj_6b preset's settings through its DeepSpeed ZeRO-2 bf16 accelerate config on one
#    GPU, with the hydra reference and with a full frozen copy; measured peak memory is printed beside the plan.
# 2. Resume: for each launch mode — one process in bf16 mixed precision, and DeepSpeed ZeRO-2 bf16 — it trains 4
#    PPO steps on a tiny model, then resumes a second run from the first run's step-2 checkpoint and compares
#    the final weights.
# 3. The whole `small` graph at Pythia-160M's real dimensions (random weights from the hub mirror): per-step wall
#    time and peak GPU memory beside the memory plan (needs the project's .venv; SMALL_GRAPH=0 skips it).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-var/gpu_check}"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}" PATH="/tmp/site/bin:$PATH"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch, transformers, accelerate, deepspeed; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'accelerate', accelerate.__version__, 'deepspeed', deepspeed.__version__)"

ZERO2=(--config_file rlhf_assets/compute/accelerate/zero2_bf16.yaml --num_processes 1)
for reference in ${REFERENCES:-hydra full}; do
  python3 -m accelerate.commands.launch "${ZERO2[@]}" -m bench.gpu_ppo_memory --reference "$reference" \
    --out "$OUT/memory-$reference.json" 2>&1 | tee "$OUT/memory-$reference.log" | grep -E "^step|memory plan|Error|ratio|peak" || true
done
python3 - "$OUT" <<'PY'
import json, sys
from pathlib import Path
for path in sorted(Path(sys.argv[1]).glob("memory-*.json")):
    r = json.loads(path.read_text())
    print(f"{r['reference']:>5} reference on {r['device']} ({r['precision']}), {r['parameters'] / 1e9:.2f} B parameters: "
          f"plan {r['plan_rank_gib']:.2f} GiB, measured peak {r['measured_peak_gib']:.2f} GiB "
          f"(measured/plan {r['ratio_measured_to_plan']:.2f}); held: plan {r['held_plan_gib']:.2f}, after prepare "
          f"{r['held_measured_after_prepare_gib']:.2f}, after training {r['held_measured_after_training_gib']:.2f}; "
          f"{r['samples_per_second']:.1f} samples/s")
    for phase, v in r["phases"].items():
        print(f"      {phase:<16} plan {v['plan_gib']:.2f} GiB, measured {v['measured_peak_gib'] or 0:.2f} GiB")
PY

declare -A LAUNCH=(
  [bf16]="--num_processes 1 --mixed_precision bf16"
  [zero2_bf16]="--config_file rlhf_assets/compute/accelerate/zero2_bf16.yaml --num_processes 1"
)
for mode in ${MODES:-bf16 zero2_bf16}; do
  work="$OUT/$mode"
  rm -rf "$work" && mkdir -p "$work/resumed_ckpt"
  # shellcheck disable=SC2086
  python3 -m accelerate.commands.launch ${LAUNCH[$mode]} -m tests.ppo_distributed_worker \
    --checkpoint-dir "$work/ckpt" --out "$work/straight" 2>&1 | tee "$work/straight.log" | grep -E "^step|saved|Error"
  cp -r "$work/ckpt/step-00000002" "$work/resumed_ckpt/"
  # shellcheck disable=SC2086
  python3 -m accelerate.commands.launch ${LAUNCH[$mode]} -m tests.ppo_distributed_worker \
    --checkpoint-dir "$work/resumed_ckpt" --out "$work/resumed" 2>&1 | tee "$work/resumed.log" | grep -E "^step|resumed|Error"
  python3 - "$work" "$mode" <<'PY'
import json, sys
from pathlib import Path
work, mode = Path(sys.argv[1]), sys.argv[2]
a = json.loads((work / "straight" / "rank-0.json").read_text())
b = json.loads((work / "resumed" / "rank-0.json").read_text())
diff = max(abs(x - y) for k in a["weights"] for x, y in zip(a["weights"][k], b["weights"][k]))
print(f"{mode}: device {a['device']} {a['distributed_type']} mixed_precision={a['mixed_precision']} "
      f"steps {a['step']} / resumed from {b['resumed_from']} to {b['step']}; scores {a['scores']}; "
      f"max |Δ weight| straight vs resumed {diff:.2e}; KL coef {a['kl_coef']:.6f} vs {b['kl_coef']:.6f}")
assert b["resumed_from"] == 2 and b["step"] == a["step"] == 4
assert diff < 1e-2, "resumed run drifted from the uninterrupted one"
PY
done

# 3. The small graph at its real dimensions (issue 25): EleutherAI/pythia-160m's real shape with random weights from
#    the hub mirror, every step as `small` configures it (bf16, TRL trainers, our PPO, Detoxify), with the
#    miniature's row and step counts; per-step wall time and peak GPU memory beside each step's memory plan.
#    Needs the project's environment (bash scripts/setup.sh, which needs the package registry) and ../shared/data.
if [[ -x .venv/bin/rlhf-assets && "${SMALL_GRAPH:-1}" == 1 ]]; then
  export RLHF_HUB_MIRROR="$OUT/hub-mirror-real" DAGSTER_HOME="$PWD/$OUT/small/dagster_home"
  export RLHF_ARTIFACT_ROOT="$PWD/$OUT/small/artifacts" RLHF_LABELING_DB="$PWD/$OUT/small/labels.sqlite"
  .venv/bin/rlhf-assets mirror --real-dimensions "$RLHF_HUB_MIRROR" >/dev/null
  bash scripts/run_miniature.sh small 2>&1 | tail -n 3
  .venv/bin/python -m bench.step_memory_table
fi
