"""Per-request records, latency distributions, SLO attainment, energy and outputs."""
