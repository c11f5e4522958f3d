"""Model definitions (Llama architecture, with Mixtral-style MoE layers)."""
