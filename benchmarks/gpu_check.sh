#!/usr/bin/env bash
# The prepared GPU check: copra's GPU paths (tests/test_gpu.py, marker `gpu`) and the GPU
# benchmarks, each beside the reference measured in the same run, in one command.
#
#   bash benchmarks/gpu_check.sh OUT          # on a machine with a CUDA GPU (under 8 minutes)
#   bash benchmarks/gpu_check.sh OUT --cpu    # the same steps at tiny sizes on the CPU
#
# Offline: what the machine lacks (fair-esm, biopython, jsonschema, pytest) is installed from
# .gpu-check/wheels/ (`make gpu-wheels` fetches them where there is a network), never from the
# network; the benchmarks read .gpu-check/yeast.fasta (or ../shared's yeast sequences).
# OUT gets gpu_check.tsv (step, status, seconds, log), one log per step, gpu_tests.tsv (the
# tests' measured values) and finetune_step.tsv. Exit status: the number of failed steps.
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_check.sh OUT [--cpu]}
mode=${2:-gpu}
mkdir -p "$out" && out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
site=$PWD/.gpu-check/site  # the carried wheels, installed beside the system's packages
export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}" TQDM_DISABLE=1 COPRA_GPU_CHECK_OUT="$out"
fasta=.gpu-check/yeast.fasta
[ -f "$fasta" ] || fasta=../shared/data/ppi_yeast/sequences.fasta
printf 'step\tstatus\tseconds\tlog\n' > "$out/gpu_check.tsv"
failed=0

step() {  # step NAME COMMAND...: run it, log it, add its row
    local name=$1 start status
    shift
    start=$(date +%s)
    echo "== $name: $*" | tee -a "$out/gpu_check.log"
    if "$@" > "$out/$name.log" 2>&1; then status=ok; else status="failed($?)"; failed=$((failed + 1)); fi
    tail -n 25 "$out/$name.log" >> "$out/gpu_check.log"
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(($(date +%s) - start))" "$name.log" \
        | tee -a "$out/gpu_check.tsv"
}

install_missing() {  # what the machine lacks, from the carried wheels only
    local module missing=()
    for module in esm Bio jsonschema pytest; do
        "$python" -c "import $module" 2> /dev/null || missing+=("$module")
    done
    echo "missing: ${missing[*]:-nothing}"
    [ ${#missing[@]} -eq 0 ] && return 0
    # --target: no write to the system's site-packages (nor its PEP 668 refusal)
    "$python" -m pip install --no-index --no-deps --upgrade --target "$site" .gpu-check/wheels/*.whl
    "$python" -c "import esm, Bio, jsonschema, pytest; print('installed into $site')"
}

machine() {
    "$python" -c "import torch, sys; print(sys.version); print('torch', torch.__version__,
        'cuda', torch.version.cuda); print(torch.cuda.get_device_name(0)
        if torch.cuda.is_available() else 'no GPU')"
    nvidia-smi 2> /dev/null || true
}

if [ "$mode" = --cpu ]; then
    export COPRA_GPU_CHECK=cpu
    device=cpu model=esm2_t6_8M_UR50D
    embed=(--sequences 6 --repeats 1)
    fair=(--sequences 6 --repeats 1 --slices 1)
    train=(--methods lora full --steps 1 --warmup-steps 0 --length 32 --batch-size 2)
    screen=(--head-proteins 12 --lora-proteins 6 --seeds 1)
else
    device=cuda model=esm2_t33_650M_UR50D
    embed=(--sequences 600 --repeats 2 --matmul-size 8192)
    fair=(--sequences 1000 --repeats 1)
    train=(--methods lora full --steps 6 --length 512 --batch-size 8)
    screen=(--head-proteins 2000 --lora-proteins 500 --seeds 2)
fi

step machine machine
step install install_missing
step gpu_tests "$python" -m pytest -m gpu tests/test_gpu.py -p no:cacheprovider -rs -v
common=(--model "$model" --device "$device")
step embed_flops "$python" benchmarks/embed_flops.py "${common[@]}" "${embed[@]}" --fasta "$fasta"
step embed_vs_fair_esm "$python" benchmarks/embed_vs_fair_esm.py "${common[@]}" "${fair[@]}" \
    --fasta "$fasta"
step finetune_step "$python" benchmarks/finetune_step.py "${common[@]}" "${train[@]}" \
    --output "$out/finetune_step.tsv"
step screen "$python" benchmarks/screen.py "${common[@]}" "${screen[@]}" --fasta "$fasta"
echo "$failed failed step(s); results in $out"
exit "$failed"
