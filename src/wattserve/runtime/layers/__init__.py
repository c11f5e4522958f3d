"""Transformer building blocks: RMSNorm, rotary embeddings, paged attention, SwiGLU and MoE MLPs."""
