#!/usr/bin/env bash
# Runs each fuzz target for FUZZTIME. Go's fuzzer sometimes ends a run that found nothing with "context deadline
# exceeded" when a worker is slow to stop on a loaded machine; such a run is tried once more. A run that found a
# failing input ("Failing input written to ...") fails at once. Each new interesting input is minimized in at most
# 100 runs: by default the fuzzer spends up to a minute on each, which on large inputs (SPDY sessions) ate whole
# short runs.
set -uo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-10s}
targets=(
  "./auth FuzzVerify" "./auth FuzzVerifyProof" "./auth FuzzVerifyAssertion" "./auth FuzzParseRule" "./auth FuzzClassify" "./audit FuzzVerify" "./audit FuzzKubeletDetails" "./tunnel FuzzWSRead" "./internal/sessionend FuzzSPDYFraming" "./collector FuzzReceive"
  "./audit FuzzVerifyAttested" "./gateway FuzzClientAddr" "./internal/streamframe FuzzWitness" "./volume FuzzOpenMetaDB"
)
for t in "${targets[@]}"; do
  set -- $t
  for attempt in 1 2; do
    out=$(go test -run '^$' -fuzz "^$2\$" -fuzztime "$fuzztime" -fuzzminimizetime 100x -parallel 2 "$1" 2>&1)
    status=$?
    echo "$out" | grep -v '^fuzz: elapsed'
    if [ $status -eq 0 ]; then break; fi
    if [ $attempt -eq 1 ] && echo "$out" | grep -q 'context deadline exceeded' && ! echo "$out" | grep -q 'Failing input written'; then
      echo "fuzz: $1 $2 stopped on the fuzzer's own deadline without a finding; trying once more"
      continue
    fi
    exit 1
  done
done
