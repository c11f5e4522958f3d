"""Every bad input a user gave `simulate`, `estimate`, `compare` and `calibrate` (issue 16), as one
table: one line on stderr naming the flag or field, exit status 2, no traceback, nothing on stdout,
and no file or folder written. `serve` and `bench` hold theirs in test_serve_inputs.py and
test_bench_inputs.py (they need a process group and a closed port).

The command runs in this process (`wattserve.cli.main`), so a case costs milliseconds, not a Python
start; an exception that escaped the command's own handling would fail the case as a traceback would
fail the user. The few inputs that once asked numpy for terabytes run in a subprocess, so that a
regression kills a child, not the test session.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from refusal import assert_refused, run_in_process

AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"

INPUTS: dict[str, bytes | None] = {
    "binary.csv": bytes(range(256)) * 8,
    "latin1.csv": (AZURE_HEADER + "2023-11-16 18:15:46.1,12,\u00e9\n").encode("latin-1"),
    "latin1.yaml": "cluster:\n  gpu: h\u00e9\n".encode("latin-1"),
    "binary.yaml": bytes(range(256)) * 8,
    "empty.csv": b"",
    "header-only.csv": AZURE_HEADER.encode(),
    "wrong-header.csv": b"time,prompt,output\n1,2,3\n",
    "letters.csv": (AZURE_HEADER + "2023-11-16 18:15:46.1,12,x\n").encode(),
    "negative.csv": (AZURE_HEADER + "2023-11-16 18:15:46.1,-12,5\n").encode(),
    "bad-time.csv": (AZURE_HEADER + "yesterday,12,5\n").encode(),
    "nan-time.jsonl": b'{"timestamp": 0, "input_length": 5, "output_length": 3}\n'
                      b'{"timestamp": NaN, "input_length": 5, "output_length": 3}\n',
    "inf-time.jsonl": b'{"timestamp": 0, "input_length": 5, "output_length": 3}\n'
                      b'{"timestamp": Infinity, "input_length": 5, "output_length": 3}\n',
    "not-json.jsonl": b'{"timestamp": 0, "input_length": 5\n',
    "missing-key.jsonl": b'{"timestamp": 0, "input_length": 5}\n',
    "list.jsonl": b"[1, 2, 3]\n",
    "list.yaml": b"- 1\n- 2\n",
    "cluster-list.yaml": b"cluster: [1, 2]\n",
    "unknown-key.yaml": b"cluster:\n  gpu: h100\n  nodes: 3\n",
    "bad-yaml.yaml": b"cluster: [1, 2\n",
    "slo-word.yaml": b"slo:\n  ttft_ms: fast\n",
    "trace-format.yaml": b"workload:\n  trace_format: parquet\n",
    "policy-only.yaml": b"control:\n  policy: rapid\n",
    "budget-trace.yaml": b"control:\n  policy: rapid\n  budget_trace: nonexistent.csv\n",
    "empty.yaml": b"",
    "file": b"a file, not a folder\n",
    "folder.csv": None,
    "folder.yaml": None,
    "empty-data": None,
    "budget-header.csv": b"time,watts\n0,4000\n",
    "budget-header-only.csv": b"time_s,watts\n",
    "budget-columns.csv": b"time_s,watts\n0,4000,1\n",
    "budget-letters.csv": b"time_s,watts\n0,4000\n10,lots\n",
    "budget-negative.csv": b"time_s,watts\n0,4000\n10,-5\n",
    "budget-zero.csv": b"time_s,watts\n0,4000\n10,0\n",
    "budget-nan.csv": b"time_s,watts\n0,4000\n10,nan\n",
    "budget-inf.csv": b"time_s,watts\n0,4000\n10,inf\n",
    "budget-time-nan.csv": b"time_s,watts\n0,4000\nnan,3000\n",
    "budget-unsorted.csv": b"time_s,watts\n0,4000\n10,3000\n10,3500\n",
    "budget-late-start.csv": b"time_s,watts\n5,4000\n",
    "budget-below-min-caps.csv": b"time_s,watts\n0,4000\n30,1000\n",
    "target-watts.csv": b"time_s,watts\n0,100\n",
    "models-not-json.json": b"{ nope",
    "models-wrong-format.json": b'{"format": "something-else", "groups": []}',
    "models-other-deployment.json": b'{"format": "wattserve-pals-models/1", "groups": [{"gpu": "h100", '
                                    b'"model": "llama-3.1-8b", "tp": 1, "ep": 1, "caps_w": [200.0], "batches": [8], '
                                    b'"tok_s": [[100.0]], "power_w": [[150.0]]}]}',
}

CASES: list[tuple[str, list[str], str]] = [
    # simulate: the catalog and the cluster
    ("model-unknown", ["simulate", "--model", "gpt-9"], "--model: unknown model 'gpt-9'; allowed: llama-3.1-8b"),
    ("gpu-unknown", ["simulate", "--gpu", "b200"], "--gpu: unknown gpu 'b200'; allowed: h100, h200, a100, a100-40gb, h100-pcie, mi300x, cpu"),
    ("tp-3", ["simulate", "--tp", "3"], "--tp"),
    ("tp-words", ["simulate", "--tp", "two"], "--tp"),
    ("ep-3-tp-4", ["simulate", "--ep", "3", "--tp", "4", "--model", "mixtral-8x7b"],
     "--ep: 3 must be 1 or equal tp (4): experts spread over the TP group; allowed: 1, 4"),
    ("ep-dense", ["simulate", "--ep", "4", "--tp", "4", "--model", "llama-3.1-70b"],
     "--ep: 4 needs a mixture-of-experts model, and Llama-3.1-70B is dense; allowed: 1"),
    ("ep-zero", ["simulate", "--ep", "0"], "--ep"),
    ("ep-words", ["simulate", "--ep", "four"], "--ep"),
    ("expert-skew-above-1-over-k", ["simulate", "--model", "mixtral-8x7b", "--tp", "4", "--expert-skew", "0.6"],
     "--expert-skew: 0.6 is outside Mixtral-8x7B's range"),
    ("expert-skew-below-uniform", ["simulate", "--model", "qwen3-30b-a3b", "--tp", "4", "--expert-skew", "0.001"],
     "allowed: 0.0078125 to 0.125"),
    ("expert-skew-dense", ["simulate", "--expert-skew", "0.3"], "--expert-skew: 0.3 needs a mixture-of-experts model"),
    ("expert-skew-nan", ["simulate", "--model", "mixtral-8x7b", "--expert-skew", "nan"], "--expert-skew"),
    ("prefill-0", ["simulate", "--prefill", "0"], "--prefill: a disaggregated cluster needs prefill >= 1"),
    ("decode-negative", ["simulate", "--decode", "-1"], "--decode"),
    ("colocated-negative", ["simulate", "--colocated", "-1"], "--colocated"),
    ("70b-on-one-gpu", ["simulate", "--model", "llama-3.1-70b", "--tp", "1"], "raise tp"),
    ("power-cap-900", ["simulate", "--power-cap", "900"], "[200, 700] W"),
    ("power-cap-inf", ["simulate", "--power-cap", "inf"], "--power-cap"),
    ("power-cap-minus-inf", ["simulate", "--power-cap", "-inf"], "--power-cap"),
    ("power-cap-nan", ["simulate", "--power-cap", "nan"], "--power-cap"),
    ("prefill-cap-low", ["simulate", "--prefill-cap", "50"], "--prefill-cap"),
    ("decode-cap-high", ["simulate", "--decode-cap", "5000"], "--decode-cap"),
    ("clock-99", ["simulate", "--clock", "99"], "MHz"),
    ("clock-5000", ["simulate", "--clock", "5000"], "--clock: 5000 MHz is outside H100-SXM's range"),
    ("clock-nan", ["simulate", "--clock", "nan"], "--clock"),
    ("colocated-and-prefill", ["simulate", "--colocated", "8", "--prefill", "2"], "--colocated: use one layout"),
    ("concurrent-and-prefill", ["simulate", "--concurrent", "1", "--prefill", "2"], "--concurrent: use one layout"),
    ("concurrent-and-colocated", ["simulate", "--concurrent", "1", "--colocated", "1"], "use one layout"),
    ("concurrent-negative", ["simulate", "--concurrent", "-1"], "--concurrent"),
    ("router-unknown", ["simulate", "--router", "random"], "--router"),
    ("governor-unknown", ["simulate", "--governor", "fastest"], "unknown governor 'fastest'; allowed: max-clock"),
    # simulate: power control
    ("policy-without-budget", ["simulate", "--policy", "rapid"], "give both a policy"),
    ("budget-without-policy", ["simulate", "--budget", "4000"], "give both a policy"),
    ("policy-colocated", ["simulate", "--budget", "4000", "--policy", "colocated"], "allowed: static, static-split"),
    ("policy-unknown", ["simulate", "--budget", "4000", "--policy", "magic"], "--policy"),
    ("budget-inf", ["simulate", "--budget", "inf", "--policy", "rapid"], "--budget: inf is not allowed"),
    ("budget-nan", ["simulate", "--budget", "nan", "--policy", "rapid"], "--budget: nan is not allowed"),
    ("budget-negative", ["simulate", "--budget", "-5", "--policy", "rapid"], "--budget"),
    ("budget-below-min-caps", ["simulate", "--budget", "1000", "--policy", "static"], "minimum caps"),
    ("pals-models-missing", ["simulate", "--policy", "pals", "--budget", "4000", "--pals-models",
                             "{in}/nonexistent.json"], "--pals-models: cannot read '{in}/nonexistent.json'"),
    ("pals-models-not-json", ["simulate", "--policy", "pals", "--budget", "4000", "--pals-models",
                              "{in}/models-not-json.json"], "--pals-models: '{in}/models-not-json.json' is not JSON"),
    ("pals-models-format", ["simulate", "--policy", "pals", "--budget", "4000", "--pals-models",
                            "{in}/models-wrong-format.json"], "not a wattserve-pals-models/1 document"),
    ("pals-models-deployment", ["simulate", "--policy", "batch-only", "--budget", "40000", "--model", "llama-3.1-70b",
                                "--tp", "4", "--pals-models", "{in}/models-other-deployment.json"],
     "--pals-models: no fitted models for h100/llama-3.1-70b/tp4/ep1; the file has: h100/llama-3.1-8b/tp1/ep1"),
    ("pals-models-without-pals", ["simulate", "--policy", "rapid", "--budget", "4000", "--pals-models",
                                  "{in}/models-not-json.json"], "--pals-models: fitted models are for --policy pals"),
    ("pals-shipped-no-deployment", ["simulate", "--policy", "pals", "--budget", "4000"],
     "--policy: pals plans from fitted models, and the shipped file has no fitted models for "
     "h100/llama-3.1-8b/tp1/ep1; the file has: a100/mixtral-8x7b/tp4/ep1"),
    ("budget-trace-missing", ["simulate", "--policy", "rapid", "--budget-trace", "{in}/nonexistent.csv"],
     "--budget-trace: file '{in}/nonexistent.csv' does not exist; allowed: a CSV file with header time_s,watts, "
     "or a shape (step, ramp, demand-response)"),
    ("budget-trace-folder", ["simulate", "--policy", "rapid", "--budget-trace", "{in}/folder.csv"], "is a folder"),
    ("budget-trace-binary", ["simulate", "--policy", "rapid", "--budget-trace", "{in}/binary.csv"],
     "--budget-trace: {in}/binary.csv: not UTF-8"),
    ("budget-trace-empty", ["simulate", "--policy", "rapid", "--budget-trace", "{in}/empty.csv"],
     "--budget-trace: {in}/empty.csv: file is empty; allowed: a header line time_s,watts"),
    ("budget-trace-header", ["simulate", "--policy", "rapid", "--budget-trace", "{in}/budget-header.csv"],
     "row 1: header 'time,watts'; allowed: exactly time_s,watts"),
    ("budget-trace-header-only", ["simulate", "--policy", "rapid", "--budget-trace", "{in}/budget-header-only.csv"],
     "no rows after the header"),
    ("budget-trace-columns", ["simulate", "--policy", "rapid", "--budget-trace", "{in}/budget-columns.csv"],
     "row 2: 3 columns; allowed: 2"),
    ("budget-trace-letters", ["simulate", "--policy", "rapid", "--budget-trace", "{in}/budget-letters.csv"],
     "row 3: watts 'lots' is not a number; allowed: a finite number > 0"),
    ("budget-trace-negative", ["simulate", "--policy", "rapid", "--budget-trace", "{in}/budget-negative.csv"],
     "row 3: watts -5 is not allowed; allowed: a finite number > 0"),
    ("budget-trace-zero", ["simulate", "--policy", "rapid", "--budget-trace", "{in}/budget-zero.csv"],
     "row 3: watts 0 is not allowed"),
    ("budget-trace-nan", ["simulate", "--policy", "rapid", "--budget-trace", "{in}/budget-nan.csv"],
     "row 3: watts nan is not allowed"),
    ("budget-trace-inf", ["simulate", "--policy", "rapid", "--budget-trace", "{in}/budget-inf.csv"],
     "row 3: watts inf is not allowed"),
    ("budget-trace-time-nan", ["simulate", "--policy", "rapid", "--budget-trace", "{in}/budget-time-nan.csv"],
     "row 3: time_s nan is not allowed"),
    ("budget-trace-unsorted", ["simulate", "--policy", "rapid", "--budget-trace", "{in}/budget-unsorted.csv"],
     "row 4: time_s 10 is not after the previous row's 10; allowed: times strictly increasing"),
    ("budget-trace-late-start", ["simulate", "--policy", "rapid", "--budget-trace", "{in}/budget-late-start.csv"],
     "row 2: the first time is 5 s; allowed: 0"),
    ("budget-trace-below-min-caps", ["simulate", "--policy", "rapid", "--budget-trace",
                                     "{in}/budget-below-min-caps.csv"],
     "--budget-trace: 1000 W from 30 s is below the sum of the minimum caps; allowed: >= 1600 W"),
    ("budget-trace-shape-below-min-caps", ["simulate", "--policy", "rapid", "--budget", "4000", "--budget-trace",
                                           "step:level=0.3"], "--budget-trace: 1200 W from 60 s is below"),
    ("budget-trace-shape-without-budget", ["simulate", "--policy", "rapid", "--budget-trace", "step"],
     "--budget-trace: the shape 'step' scales the full budget; give --budget W too"),
    ("budget-trace-shape-bad-key", ["simulate", "--policy", "rapid", "--budget", "4000", "--budget-trace",
                                    "demand-response:hours=2"],
     "--budget-trace: demand-response: unknown parameter 'hours'; allowed: start, minutes, level"),
    ("budget-trace-shape-bad-level", ["simulate", "--policy", "rapid", "--budget", "4000", "--budget-trace",
                                      "ramp:level=0"], "--budget-trace: ramp: level=0 is not allowed"),
    ("budget-trace-file-and-budget", ["simulate", "--policy", "rapid", "--budget", "4000", "--budget-trace",
                                      "{in}/budget-late-start.csv"], "--budget-trace: a budget file gives the watts"),
    ("budget-trace-without-policy", ["simulate", "--budget-trace", "{in}/budget-late-start.csv"],
     "give both a policy"),
    ("target-without-policy", ["simulate", "--target", "500"], "--target: a throughput target is for a power policy"),
    ("target-zero", ["simulate", "--policy", "rapid", "--budget", "4000", "--target", "0"],
     "--target: 0 is not allowed; allowed: a finite number > 0 (tok/s)"),
    ("target-nan", ["simulate", "--policy", "rapid", "--budget", "4000", "--target", "nan"], "--target: nan"),
    ("target-missing", ["simulate", "--policy", "rapid", "--budget", "4000", "--target", "{in}/nonexistent.csv"],
     "--target: file '{in}/nonexistent.csv' does not exist; allowed: a CSV file with header time_s,tok_s, or a "
     "number"),
    ("target-wrong-header", ["simulate", "--policy", "rapid", "--budget", "4000", "--target", "{in}/target-watts.csv"],
     "row 1: header 'time_s,watts'; allowed: exactly time_s,tok_s"),
    ("policy-and-power-cap", ["simulate", "--budget", "4000", "--policy", "rapid", "--power-cap", "400"],
     "--power-cap"),
    # simulate: the workload
    ("rate-negative", ["simulate", "--rate", "-2"], "--rate"),
    ("rate-zero", ["simulate", "--rate", "0"], "--rate"),
    ("rate-inf", ["simulate", "--rate", "inf"], "--rate: inf is not allowed; allowed: a finite number > 0"),
    ("rate-nan", ["simulate", "--rate", "nan"], "--rate: nan is not allowed; allowed: a finite number > 0"),
    ("rate-overflows-to-inf", ["simulate", "--rate", "1e400"], "--rate: inf is not allowed"),
    ("rate-word", ["simulate", "--rate", "fast"], "--rate"),
    ("duration-inf", ["simulate", "--duration", "inf"], "--duration: inf is not allowed; allowed: a finite number > 0"),
    ("duration-zero", ["simulate", "--duration", "0"], "--duration"),
    ("num-requests-zero", ["simulate", "--num-requests", "0"], "--num-requests"),
    ("repeat-zero", ["simulate", "--repeat", "0"], "--repeat"),
    ("repeat-1001", ["simulate", "--repeat", "1001"], "--repeat: 1001 is not allowed; allowed: an integer from 1 to 1000"),
    ("num-requests-negative", ["simulate", "--num-requests", "-5"], "--num-requests"),
    ("seed-negative", ["simulate", "--seed", "-1"], "--seed"),
    ("seed-huge", ["simulate", "--seed", "1" + "0" * 40], "--seed"),
    ("slo-ttft-negative", ["simulate", "--slo-ttft-ms", "-1"], ">= 0"),
    ("slo-ttft-word", ["simulate", "--slo-ttft-ms", "fast"], "--slo-ttft-ms"),
    ("slo-tpot-nan", ["simulate", "--slo-tpot-ms", "nan"], "--slo-tpot-ms: nan is not allowed"),
    ("trace-missing", ["simulate", "--trace", "{in}/nonexistent.csv"], "does not exist"),
    ("trace-folder", ["simulate", "--trace", "{in}/folder.csv"], "is a folder"),
    ("trace-binary", ["simulate", "--trace", "{in}/binary.csv"], "--trace"),
    ("trace-latin1", ["simulate", "--trace", "{in}/latin1.csv"], "not UTF-8"),
    ("trace-empty", ["simulate", "--trace", "{in}/empty.csv"], "--trace"),
    ("trace-header-only", ["simulate", "--trace", "{in}/header-only.csv"], "--trace"),
    ("trace-wrong-header", ["simulate", "--trace", "{in}/wrong-header.csv"], "--trace"),
    ("trace-letters", ["simulate", "--trace", "{in}/letters.csv"], "line 2: GeneratedTokens 'x'"),
    ("trace-negative-tokens", ["simulate", "--trace", "{in}/negative.csv"], "line 2"),
    ("trace-bad-timestamp", ["simulate", "--trace", "{in}/bad-time.csv"], "line 2"),
    ("mooncake-nan-timestamp", ["simulate", "--trace", "{in}/nan-time.jsonl"], "line 2"),
    ("mooncake-inf-timestamp", ["simulate", "--trace", "{in}/inf-time.jsonl"], "line 2"),
    ("mooncake-not-json", ["simulate", "--trace", "{in}/not-json.jsonl"], "line 1"),
    ("mooncake-missing-key", ["simulate", "--trace", "{in}/missing-key.jsonl"], "output_length"),
    ("mooncake-list", ["simulate", "--trace", "{in}/list.jsonl"], "line 1"),
    ("trace-format-azure-on-jsonl", ["simulate", "--trace", "{in}/nan-time.jsonl", "--trace-format", "azure"],
     "--trace"),
    ("trace-unknown-extension", ["simulate", "--trace", "{in}/file"], "--trace-format"),
    ("trace-format-unknown", ["simulate", "--trace-format", "parquet"], "--trace-format"),
    ("trace-format-mismatch", ["simulate", "--trace", "{in}/letters.csv", "--trace-format", "mooncake"], "--trace"),
    # simulate: the config file
    ("config-missing", ["simulate", "--config", "{in}/nonexistent.yaml"], "does not exist"),
    ("config-folder", ["simulate", "--config", "{in}/folder.yaml"], "is a folder"),
    ("config-binary", ["simulate", "--config", "{in}/binary.yaml"], "--config"),
    ("config-latin1", ["simulate", "--config", "{in}/latin1.yaml"], "not UTF-8"),
    ("config-a-list", ["simulate", "--config", "{in}/list.yaml"], "--config"),
    ("config-cluster-a-list", ["simulate", "--config", "{in}/cluster-list.yaml"], "cluster"),
    ("config-unknown-key", ["simulate", "--config", "{in}/unknown-key.yaml"], "cluster.nodes"),
    ("config-not-yaml", ["simulate", "--config", "{in}/bad-yaml.yaml"], "not valid YAML"),
    ("config-slo-word", ["simulate", "--config", "{in}/slo-word.yaml"], "slo.ttft_ms"),
    ("config-trace-format", ["simulate", "--config", "{in}/trace-format.yaml"], "trace_format"),
    ("config-policy-only", ["simulate", "--config", "{in}/policy-only.yaml"], "give both a policy"),
    ("config-budget-trace-missing", ["simulate", "--config", "{in}/budget-trace.yaml"],
     "nonexistent.csv' does not exist; allowed: a CSV file with header time_s,watts"),
    # simulate: outputs, checked before the run
    ("out-is-a-file", ["simulate", "--out", "{in}/file"], "--out"),
    ("out-under-a-file", ["simulate", "--out", "{in}/file/run"], "--out"),
    ("out-empty", ["simulate", "--out", ""], "--out: '' is not a path"),
    # the parser
    ("unknown-flag", ["simulate", "--bogus"], "wattserve simulate: error: unrecognized arguments: --bogus"),
    ("unknown-command", ["simulat"], "invalid choice"),
    ("no-command", [], "required"),
    ("flag-without-value", ["simulate", "--rate"], "--rate"),
    # estimate
    ("estimate-ep", ["estimate", "--model", "mixtral-8x7b", "--tp", "4", "--ep", "2", "--decode-batch", "8",
                     "--context", "100"], "--ep: 2 must be 1 or equal tp (4)"),
    ("estimate-skew", ["estimate", "--model", "mixtral-8x7b", "--tp", "4", "--expert-skew", "0.9", "--decode-batch",
                       "8", "--context", "100"], "--expert-skew: 0.9 is outside Mixtral-8x7B's range"),
    ("estimate-nothing", ["estimate", "--gpu", "h100"], "either --prefill-tokens"),
    ("estimate-both", ["estimate", "--prefill-tokens", "100", "--decode-batch", "4", "--context", "10"],
     "--prefill-tokens"),
    ("estimate-cap-100", ["estimate", "--decode-batch", "8", "--context", "100", "--power-cap", "100"],
     "[200, 700] W"),
    ("estimate-cap-nan", ["estimate", "--prefill-tokens", "100", "--power-cap", "nan"], "--power-cap"),
    ("estimate-clock-99", ["estimate", "--prefill-tokens", "100", "--clock", "99"], "--clock"),
    ("estimate-clock-and-cap", ["estimate", "--prefill-tokens", "100", "--clock", "1200", "--power-cap", "400"],
     "not allowed with argument"),
    ("estimate-batch-too-big", ["estimate", "--decode-batch", "100000", "--context", "100000"], "does not fit"),
    ("estimate-huge-batch", ["estimate", "--decode-batch", "1000000", "--context", "1000000"], "does not fit"),
    ("estimate-huge-prompt", ["estimate", "--prefill-tokens", "100000000000"], "--prefill-tokens"),
    ("estimate-prompt-batch-too-big", ["estimate", "--prefill-tokens", "100000", "--prefill-batch", "1000"],
     "--prefill-tokens"),
    ("estimate-70b-on-one-gpu", ["estimate", "--model", "llama-3.1-70b", "--tp", "1", "--prefill-tokens", "100"],
     "raise tp"),
    ("estimate-tokens-zero", ["estimate", "--prefill-tokens", "0"], "--prefill-tokens"),
    ("estimate-tokens-negative", ["estimate", "--prefill-tokens", "-5"], "--prefill-tokens"),
    ("estimate-batch-zero", ["estimate", "--prefill-tokens", "5", "--prefill-batch", "0"], "--prefill-batch"),
    ("estimate-decode-no-context", ["estimate", "--decode-batch", "4"], "--context"),
    ("estimate-context-negative", ["estimate", "--decode-batch", "4", "--context", "-1"], "--context: -1"),
    ("estimate-context-zero", ["estimate", "--decode-batch", "4", "--context", "0"], "--context"),
    ("estimate-model-unknown", ["estimate", "--model", "gpt-9", "--prefill-tokens", "5"], "--model"),
    ("estimate-gpu-unknown", ["estimate", "--gpu", "b200", "--prefill-tokens", "5"], "--gpu"),
    ("estimate-tp-3", ["estimate", "--tp", "3", "--prefill-tokens", "5"], "--tp"),
    # compare
    ("compare-no-scenario", ["compare"], "--scenario"),
    ("compare-scenario-unknown", ["compare", "--scenario", "nope"], "--scenario"),
    ("compare-rates-nan", ["compare", "--scenario", "rapid-mi300x", "--rates", "nan"], "--rates"),
    ("compare-pals-rates", ["compare", "--scenario", "pals-moe", "--rates", "5"],
     "--rates: pals-moe follows a throughput-target schedule, not a rate sweep; leave --rates out"),
    ("compare-pals-deployment", ["compare", "--scenario", "pals-moe", "--workloads", "a100-llama"],
     "--workloads: unknown value 'a100-llama'; allowed: a100-mixtral-8x7b, a100-qwen3-30b-a3b"),
    ("compare-pals-policy", ["compare", "--scenario", "pals-moe", "--policies", "rapid"],
     "--policies: unknown value 'rapid'; allowed: tdp, static-cap, batch-only, pals"),
    ("compare-biscale-policy", ["compare", "--scenario", "biscale-h100", "--policies", "rapid"],
     "--policies: unknown value 'rapid'; allowed: distserve, place-only, biscale"),
    ("compare-biscale-workload", ["compare", "--scenario", "biscale-h100", "--workloads", "sonnet-shift"],
     "--workloads: unknown value 'sonnet-shift'; allowed: azure-conv, azure-code"),
    ("compare-biscale-rates", ["compare", "--scenario", "biscale-h100", "--rates", "0"], "--rates"),
    ("compare-biscale-data", ["compare", "--scenario", "biscale-h100", "--data", "{in}/nonexistent"], "--data"),
    ("simulate-prefill-tp-3", ["simulate", "--prefill-tp", "3"], "--prefill-tp"),
    ("simulate-decode-tp-weights", ["simulate", "--model", "llama-3.1-70b", "--tp", "4", "--decode-tp", "1"],
     "--decode-tp: Llama-3.1-70B needs"),
    ("simulate-prefill-clock-range", ["simulate", "--prefill-clock", "5000"], "--prefill-clock"),
    ("compare-rates-inf", ["compare", "--scenario", "rapid-mi300x", "--rates", "inf"], "--rates"),
    ("compare-rates-empty", ["compare", "--scenario", "rapid-mi300x", "--rates", ""], "--rates"),
    ("compare-rates-negative", ["compare", "--scenario", "rapid-mi300x", "--rates", "-1"], "--rates"),
    ("compare-rates-words", ["compare", "--scenario", "rapid-mi300x", "--rates", "a,b"], "--rates"),
    ("compare-policy-unknown", ["compare", "--scenario", "rapid-mi300x", "--policies", "magic"], "--policies"),
    ("compare-workload-unknown", ["compare", "--scenario", "rapid-mi300x", "--workloads", "magic"], "--workloads"),
    ("compare-seed-negative", ["compare", "--scenario", "rapid-mi300x", "--seed", "-1"], "--seed"),
    ("compare-jobs-zero", ["compare", "--scenario", "rapid-mi300x", "--jobs", "0"], "--jobs"),
    ("compare-out-a-file", ["compare", "--scenario", "rapid-mi300x", "--out", "{in}/file"], "--out"),
    ("compare-out-empty", ["compare", "--scenario", "rapid-mi300x", "--out", ""], "--out: '' is not a path"),
    ("compare-data-missing", ["compare", "--scenario", "rapid-h100", "--data", "{in}/nonexistent"], "--data"),
    # calibrate
    ("calibrate-out-folder", ["calibrate", "--out", "{in}/folder.csv"], "--out"),
    ("calibrate-out-no-parent", ["calibrate", "--out", "{in}/no/such/table.md"], "--out"),
    ("calibrate-out-under-a-file", ["calibrate", "--out", "{in}/file/table.md"], "--out"),
    ("calibrate-out-empty", ["calibrate", "--out", ""], "--out: '' is not a path"),
    ("calibrate-data-missing", ["calibrate", "--data", "{in}/nonexistent"], "--data"),
    ("calibrate-data-a-file", ["calibrate", "--data", "{in}/file"], "--data"),
    ("calibrate-data-empty", ["calibrate", "--data", "{in}/empty-data"], "--data"),
]

HUGE: list[tuple[str, list[str], str]] = [
    ("rate-1e9", ["simulate", "--rate", "1e9"], "--rate"),
    ("duration-1e9", ["simulate", "--duration", "1e9"], "--duration"),
    ("num-requests-1e12", ["simulate", "--num-requests", "1000000000000"], "--num-requests"),
    ("repeat-huge", ["simulate", "--repeat", "100000000"], "--repeat"),
    ("trace-repeat-huge", ["simulate", "--trace", "{in}/../trace.csv", "--repeat", "1000000000"], "--repeat"),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli-inputs") / "in"
    folder.mkdir()
    for name, content in INPUTS.items():
        if content is None:
            (folder / name).mkdir()
        else:
            (folder / name).write_bytes(content)
    (folder.parent / "trace.csv").write_text(AZURE_HEADER + "2023-11-16 18:15:46.1,12,5\n")
    return folder


def snapshot(folder: Path) -> set[tuple[str, int]]:
    return {(str(p.relative_to(folder)), p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.mark.parametrize(("argv", "expect"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_no_output(argv: list[str], expect: str, inputs: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    before = snapshot(inputs)
    args = [a.format(**{"in": inputs}) for a in argv]
    if args and args[0] == "simulate" and "--out" not in args and "--bogus" not in args:
        args += ["--out", str(tmp_path / "run")]
    code, out, err = run_in_process(args, capsys)
    assert_refused(code, out, err, expect.format(**{"in": inputs}))
    assert list(tmp_path.iterdir()) == [], "a refused command wrote into the working folder"
    assert snapshot(inputs) == before, "a refused command wrote beside its inputs"


@pytest.mark.parametrize(("argv", "expect"), [c[1:] for c in HUGE], ids=[c[0] for c in HUGE])
def test_a_run_too_big_for_memory_is_refused_before_it_starts(argv: list[str], expect: str, inputs: Path,
                                                              tmp_path: Path) -> None:
    args = [a.format(**{"in": inputs}) for a in argv] + ["--out", str(tmp_path / "run")]
    p = subprocess.run([sys.executable, "-m", "wattserve", *args], capture_output=True, text=True, cwd=tmp_path,
                       timeout=60)
    assert_refused(p.returncode, p.stdout, p.stderr, expect)
    assert list(tmp_path.iterdir()) == []
