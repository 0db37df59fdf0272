#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one go, ending with one summary: the offline test suite with
# Lightning's accelerator on `auto` (so the runs in it train on the GPU), `fast.yaml` fitted on the
# GPU, the speed benchmark there, and a two-process DDP fit where two GPUs exist. Run it where the
# project is installed (`pip install -e ".[dev]"`) and MNIST lies in DATA_DIR:
#
#     bash benchmarks/gpu_check.sh [DATA_DIR]          # default ../shared/data
#
# Logs and JSON go to benchmarks/results/gpu_check/, runs to lightning_logs/gpu_check/.
set -uo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data}
out=benchmarks/results/gpu_check
runs=lightning_logs/gpu_check
gpus=$(python -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
if [ "$gpus" = 0 ]; then
    echo "gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); nothing was run"
    exit 2
fi
mkdir -p "$out"
rm -rf "$runs"
summary=()

# step NAME COMMAND...: runs it with its output in $out/NAME.log and notes pass or fail and time
step() {
    local name=$1 started status
    shift
    started=$(date +%s)
    echo "gpu_check: $name ..."
    if "$@" >"$out/$name.log" 2>&1; then status=pass; else status="FAIL (exit $?)"; fi
    summary+=("$name: $status, $(($(date +%s) - started)) s (log: $out/$name.log)")
}

fast=(--config configs/fast.yaml --data.data_dir "$data" --trainer.enable_progress_bar false)
step tests python -m pytest -q -m "not slow" -p no:cacheprovider
step fit_fast python -m mnist_lit fit "${fast[@]}" --trainer.accelerator gpu \
    --trainer.devices 1 --trainer.default_root_dir "$runs/fit"
step train_speed python benchmarks/train_speed.py --config configs/fast.yaml --data_dir "$data" \
    --out "$out/train_speed.json" --trainer.accelerator gpu --trainer.devices 1 \
    --trainer.default_root_dir "$runs/speed"
if [ "$gpus" -ge 2 ]; then
    step ddp_fit_fast python -m mnist_lit fit "${fast[@]}" --trainer.accelerator gpu \
        --trainer.devices 2 --trainer.strategy ddp --trainer.default_root_dir "$runs/ddp"
else
    summary+=("ddp_fit_fast: not run, one GPU")
fi

echo
echo "gpu_check summary"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
python -c "import torch, lightning; print('torch', torch.__version__, 'CUDA', torch.version.cuda, \
'lightning', lightning.__version__, 'GPUs', torch.cuda.device_count())"
printf '%s\n' "${summary[@]}"
tail -n 1 "$out/tests.log"
python - "$runs" "$out/train_speed.json" <<'EOF'
import json
import sys
from pathlib import Path

runs, speed = Path(sys.argv[1]), Path(sys.argv[2])
for metrics in sorted(runs.glob("*/lightning_logs/version_*/metrics.json")):
    figures = json.loads(metrics.read_text())
    print(f"{metrics.parts[-4]}: test/acc {figures.get('test/acc')}, "
          f"training {figures.get('train_seconds')} s")
if speed.is_file():
    results = json.loads(speed.read_text())
    for name, contender in results.get("contenders", {}).items():
        print(f"train_speed {name}: {contender.get('steady_images_per_second')} images/s, "
              f"{contender.get('seconds_to_99')} s to 99%")
    print(f"train_speed ratios: {results.get('ratios')}")
    print(f"inference at batch 1024: {results.get('inference_images_per_second_batch_1024')}")
EOF
