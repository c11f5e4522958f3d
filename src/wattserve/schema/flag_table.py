"""Generated from the schema models by `python -m wattserve.schema.flags`: do not edit by hand
(tests/test_schema_flags.py fails when this table and the models disagree)."""
# ruff: noqa: E501

from wattserve.schema.flags import Flag

SIMULATE = (
    Flag(name='gpu', path='cluster.gpu', type='str', help='GPU kind [default h100; allowed: h100, h200, a100, mi300x]', group='cluster'),
    Flag(name='model', path='cluster.model', type='str', help='served model [default llama-3.1-8b; allowed: llama-3.1-8b, llama-3.1-70b, llama-2-70b, mixtral-8x7b, qwen3-30b-a3b]', group='cluster'),
    Flag(name='tp', path='cluster.tp', type='int', help='tensor-parallel GPUs per instance [default 1; allowed: 1, 2, 4, 8]', group='cluster'),
    Flag(name='prefill', path='cluster.prefill', type='int', help='prefill instances [default 4]', group='cluster'),
    Flag(name='decode', path='cluster.decode', type='int', help='decode instances [default 4]', group='cluster'),
    Flag(name='colocated', path='cluster.colocated', type='int', help='colocated (hybrid-batching) instances instead of prefill/decode: the layout [default 0]', group='cluster'),
    Flag(name='power-cap', path='cluster.power_cap_w', type='float', help="per-GPU power cap, W (default: the GPU's TDP)", group='cluster'),
    Flag(name='prefill-cap', path='cluster.prefill_cap_w', type='float', help='per-GPU cap on prefill instances, W', group='cluster'),
    Flag(name='decode-cap', path='cluster.decode_cap_w', type='float', help='per-GPU cap on decode instances, W', group='cluster'),
    Flag(name='clock', path='cluster.clock_mhz', type='int', help='locked SM clock, MHz', group='cluster'),
    Flag(name='router', path='cluster.router', type='str', help='request router [default least_loaded; allowed: round_robin, least_loaded]', group='cluster'),
    Flag(name='governor', path='cluster.engine.governor', type='str', help='step governor each instance asks for its clock before every iteration [default max-clock; allowed: max-clock, tpot-slack]', group='cluster'),
    Flag(name='budget', path='control.budget_w', type='float', help='cluster power budget, W (run a --policy under it)', group='control'),
    Flag(name='policy', path='control.policy', type='str', help='power policy run under the budget (needs --budget) [allowed: static, static-split, rapid-power, rapid-roles, rapid]', group='control'),
    Flag(name='trace', path='workload.trace', type='str', help='Azure CSV or Mooncake JSONL trace file', group='workload'),
    Flag(name='trace-format', path='workload.trace_format', type='str', help='trace file format (default: from the extension) [allowed: azure, mooncake]', group='workload'),
    Flag(name='rate', path='workload.rate', type='float', help='request rate, req/s (a trace is rescaled to it; synthetic default 5.53)', group='workload'),
    Flag(name='duration', path='workload.duration_s', type='float', help='seconds of workload (a trace is cut to it; synthetic default 600)', group='workload'),
    Flag(name='num-requests', path='workload.num_requests', type='int', help='number of requests', group='workload'),
    Flag(name='repeat', path='workload.repeat', type='int', help='play the workload N times end to end [default 1]', group='workload'),
    Flag(name='slo-ttft-ms', path='slo.ttft_ms', type='float', help='TTFT SLO, ms (0 drops it) [default 1000]', group='slo'),
    Flag(name='slo-tpot-ms', path='slo.tpot_ms', type='float', help='TPOT SLO, ms (0 drops it) [default 50]', group='slo'),
    Flag(name='seed', path='seed', type='int', help='random seed [default 0]', group=''),
)
