"""Drive an existing vLLM or SGLang fleet: observations from each engine's Prometheus /metrics and power from
node agents, behind the same Backend seam as the simulator and our runtime."""
