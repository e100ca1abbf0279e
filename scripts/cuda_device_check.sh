#!/bin/bash
# The device check (scripts/cuda_device_prepare.sh puts it in .device/): tests with each WKV lane
# count, the lane-count comparison, the full benchmark, memcheck on the kernel tests.
cd "$(dirname "$0")"
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export LD_LIBRARY_PATH=$PWD/lib:/usr/local/cuda/lib64:$LD_LIBRARY_PATH
export RWKV7_SHARED_DIR=$PWD/shared
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv
for q in 1 2 4; do
  RWKV7_WKV_LANES=$q timeout 60 bin/rwkv7_cuda_tests > $OUT/tests_q$q.txt 2>&1
  echo "tests lanes=$q rc=$? $(grep -E '^\[  (PASSED|FAILED) ' $OUT/tests_q$q.txt | tr '\n' ' ')"
done
grep -E "GREEDY tiny|Failure" $OUT/tests_q1.txt | head
for q in 1 2 4; do
  echo "== lanes $q"
  RWKV7_WKV_LANES=$q timeout 60 bin/rwkv7_cuda_bench --shapes 0.1B,1.5B --batches 256 --steps 32 --prefill 4096 | grep -E "decode|prefill"
done
timeout 150 bin/rwkv7_cuda_bench --shapes 0.1B,0.4B,1.5B,2.9B --dtype bf16 --batches 1,8,64,256 --prefill 4096 --out $OUT/bench_bf16.json
echo "bench bf16 rc=$?"
timeout 40 bin/rwkv7_cuda_bench --shapes 0.1B --dtype f32 --batches 1,64 --prefill 4096 --out $OUT/bench_f32.json
echo "bench f32 rc=$?"
timeout 100 bin/rwkv7_cuda_bench --shapes 7.2B --dtype bf16 --batches 1,960 --steps 8 --prefill 4096 --out $OUT/bench_72.json
echo "bench 7.2B rc=$?"
timeout 60 compute-sanitizer --tool memcheck bin/rwkv7_cuda_tests --gtest_filter='CudaKernels.*' > $OUT/memcheck.txt 2>&1
echo "memcheck rc=$? $(grep 'ERROR SUMMARY' $OUT/memcheck.txt)"
echo DONE
