"""A compact LLM engine: paged KV cache, continuous batching, chunked prefill, sampling."""
