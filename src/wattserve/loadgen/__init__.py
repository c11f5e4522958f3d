"""A load generator for OpenAI-compatible servers, after `vllm bench serve` (flags and result fields)."""
