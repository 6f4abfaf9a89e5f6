#!/usr/bin/env bash
# Builds the one-thread experiments of benchmarks/RESULTS.md ("Fifth round") as separate copies
# of the C++ statistics extension, for bench_block_stats_builds.py to time side by side:
#
#   bash benchmarks/variants/build_one_thread.sh /tmp/variants
#   MALLOC_MMAP_THRESHOLD_=65536 python benchmarks/bench_block_stats_builds.py --hidden 576 \
#       --dtype bf16 --threads 1 base=/tmp/variants/base.so nosums=/tmp/variants/nosums.so ...
#
# Each variant is this tree's kernel with one_thread.patch applied (written against b5d6a49) and
# a few LF_EXP_* macros defined (see the patch). They are measurements, not kernels: nosums,
# nostore and order leave the channel moments wrong by design. The others give the kernel's
# statistics (check_one_thread.py); split and interleaved change only the bf16 path of the
# AVX512-BF16 build.
set -euo pipefail
out=${1:?usage: build_one_thread.sh OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
python=${PYTHON:-python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
git -C "$root" archive HEAD | tar -x -C "$work"
(cd "$work" && git apply "$here/one_thread.patch")
cp "$work/layerfast/kernels/block_stats.cpp" "$work/block_stats.cpp.orig"
declare -A variants=(
  [base]=""
  [nosums]="NOSUMS"                        # no channel moments at all (four runs, as the kernel)
  [nostore]="NOSTORE"                      # moments computed, their sums never stored
  [order]="SIDE1 ROWS1 NOSUMS"             # rows in memory order, one at a time, no moments
  [order_moments]="SIDE1 ROWS1"            # the same with the moments, one row at a time
  [split]="SIDE1 SPLIT NOPF"               # each row streamed, then four rows' moments from L1
  [split_prefetch]="SIDE1 SPLIT"           # ... prefetching the next four rows meanwhile
  [interleaved]="SIDE1 SPLIT INTER NOPF EVERY1"  # moments of the last four rows inside the stream
  [pairs]="PAIRS"                          # eight rows side by side: two neighbours of four runs
)
for name in "${!variants[@]}"; do
  cp "$work/block_stats.cpp.orig" "$work/layerfast/kernels/block_stats.cpp"
  for m in ${variants[$name]}; do
    case $m in
      EVERY*) sed -i "1i #define LF_EXP_EVERY ${m#EVERY}" "$work/layerfast/kernels/block_stats.cpp" ;;
      *) sed -i "1i #define LF_EXP_$m" "$work/layerfast/kernels/block_stats.cpp" ;;
    esac
  done
  (cd "$work" && "$python" setup.py build_ext --inplace --force > "$work/build_$name.log" 2>&1) ||
    { cat "$work/build_$name.log" >&2; exit 1; }
  cp "$work"/layerfast/_block_stats_cpp*.so "$out/$name.so"
  echo "built $out/$name.so"
done
