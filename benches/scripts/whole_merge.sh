#!/usr/bin/env bash
# Whole-merge timing, two binaries interleaved: the `rn20w1_split` pair, 2000 merge samples,
# budget 1.2, default settings (2 threads where the machine has 2 cores).
#
#   benches/scripts/whole_merge.sh OLD_BINARY NEW_BINARY [ROUNDS] [PATHS]
#
# ROUNDS (default 3) rounds, each running OLD, then NEW once per SIMD path in PATHS (default
# "default": the path the CPU probe picks; e.g. "default avx2" also forces PLEAS_SIMD=avx2 on
# the new binary). Prints one table row per run (wall and user+sys CPU from /usr/bin/time,
# report.json's merge seconds, peak resident memory, the load average before the run) and the
# medians per
# binary/path, with the ratio of the old binary's median wall time to each one's.
# Set EVAL=1 to also score the merged models (--eval; adds the evaluation to wall time), and
# NEW_ARGS="--memory 1024" (say) to pass extra options to the new binary only.
set -euo pipefail
cd "$(dirname "$0")/../.."
old=${1:?usage: whole_merge.sh OLD NEW [ROUNDS] [PATHS]}
new=${2:?usage: whole_merge.sh OLD NEW [ROUNDS] [PATHS]}
rounds=${3:-3}
paths=${4:-default}
fx=tests/fixtures/fashion
a=$fx/rn20w1_split/fashion_resnet20_w1_split_m0_s2.safetensors
b=$fx/rn20w1_split/fashion_resnet20_w1_split_m1_s3.safetensors
work=$(mktemp -d /tmp/pleas-whole-merge.XXXXXX)
trap 'rm -rf "$work"' EXIT
eval_args=()
if [[ "${EVAL:-0}" == 1 ]]; then eval_args=(--eval "$fx/eval.safetensors"); fi

grep -m1 'Model name' /proc/cpuinfo /dev/null 2>/dev/null | sed 's/.*: /CPU: /' ||
    lscpu | grep 'Model name'
printf '| round | binary | path | wall s | cpu s | merge s (report) | peak RSS MB | load |\n'
printf '|---|---|---|---|---|---|---|---|\n'
results=$work/results.tsv
: >"$results"

run() { # label binary path round
    local label=$1 bin=$2 path=$3 round=$4 out=$work/out-$1-$3-$4
    local load
    load=$(cut -d' ' -f1 /proc/loadavg)
    local envs=() extra=()
    if [[ "$label" == new && -n "${NEW_ARGS:-}" ]]; then read -r -a extra <<<"$NEW_ARGS"; fi
    if [[ "$path" != default ]]; then envs=(PLEAS_SIMD="$path"); fi
    env "${envs[@]}" /usr/bin/time -f '%e %U %S %M' -o "$work/time" \
        "$bin" merge "$a" "$b" --data "$fx/eval.safetensors" --budget 1.2 -o "$out" --quiet \
        "${eval_args[@]}" "${extra[@]}" >"$work/stdout" 2>&1 || { cat "$work/stdout"; exit 1; }
    local wall cpu merge
    read -r wall user sys rss_kb <"$work/time"
    local rss
    rss=$(awk -v k="$rss_kb" 'BEGIN { printf "%.0f", k / 1024 }')
    cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
    merge=$(jq -r '.seconds.total // .timings.total // empty' "$out/report.json" 2>/dev/null |
        awk '{ printf "%.2f", $1 }')
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$round" "$label" "$path" "$wall" "$cpu" \
        "${merge:--}" "$rss" "$load"
    printf '%s\t%s\t%s\t%s\t%s\n' "$label" "$path" "$wall" "$cpu" "$rss" >>"$results"
    if [[ "${EVAL:-0}" == 1 ]]; then sed 's/^/    /' "$work/stdout"; fi
    sha256sum "$out/merged.safetensors" | cut -c1-16 >>"$work/hashes-$label-$path"
    rm -rf "$out"
}

for r in $(seq 1 "$rounds"); do
    run old "$old" default "$r"
    for p in $paths; do run new "$new" "$p" "$r"; done
done

echo
echo "medians of $rounds (uptime: $(uptime | sed 's/.*load/load/'))"
python3 - "$results" <<'EOF'
import statistics, sys
rows = [l.split('\t') for l in open(sys.argv[1]).read().split('\n') if l]
keys = []
for label, path, *_ in rows:
    if (label, path) not in keys:
        keys.append((label, path))
med = {k: tuple(statistics.median(float(r[i]) for r in rows if (r[0], r[1]) == k)
                for i in (2, 3, 4)) for k in keys}
old_wall, old_cpu, _ = med[keys[0]]
print('| binary | path | wall s | cpu s | peak RSS MB | old/this wall | old/this cpu |')
print('|---|---|---|---|---|---|---|')
for k in keys:
    w, c, m = med[k]
    print(f'| {k[0]} | {k[1]} | {w:.2f} | {c:.2f} | {m:.0f} | {old_wall / w:.2f}x | {old_cpu / c:.2f}x |')
EOF
for h in "$work"/hashes-*; do
    printf '%s: %s distinct merged.safetensors hash(es): %s\n' "${h##*/hashes-}" \
        "$(sort -u "$h" | wc -l)" "$(sort -u "$h" | tr '\n' ' ')"
done
