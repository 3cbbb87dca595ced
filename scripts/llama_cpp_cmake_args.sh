#!/bin/sh
# CMAKE_ARGS for compiling llama-cpp-python so that the server runs on any x86-64 CPU with
# the instructions it is built with, not only on the build machine.
#
# Why: a plain `pip install llama-cpp-python` compiles llama.cpp with GGML_NATIVE, i.e. for
# every extension the build machine lists. On this project's machine kind some CPUs list
# AVX-512 and AMX, and the first chat completion (a batched matmul) died with SIGILL, exit
# 132. So: GGML_NATIVE off, and only the AVX2-era extensions switched on — each one only if
# this CPU lists it, so a build never targets more than the machine it is installed on.
# AVX-512 and AMX are never enabled: they buy little for a 135M model on 2 cores.
set -eu
case "$(uname -m)" in
  x86_64|amd64) ;;
  *) echo "-DGGML_NATIVE=OFF"; exit 0 ;;
esac
flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
args="-DGGML_NATIVE=OFF"
for pair in avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2; do
  cpu=${pair%%:*}; opt=${pair#*:}
  case " $flags " in
    *" $cpu "*) args="$args -DGGML_$opt=ON" ;;
    *) args="$args -DGGML_$opt=OFF" ;;
  esac
done
for opt in AVX512 AVX512_VBMI AVX512_VNNI AVX512_BF16 AVX_VNNI AMX_TILE AMX_INT8 AMX_BF16; do
  args="$args -DGGML_$opt=OFF"
done
echo "$args"
