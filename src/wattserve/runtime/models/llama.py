"""The Llama architecture (Touvron et al., 2023): RMSNorm, RoPE, GQA attention, SwiGLU MLP; with
Mixtral-style sparse MoE MLPs when the config has experts. Module names follow Hugging Face
checkpoints (model.layers.N.self_attn.q_proj, block_sparse_moe.experts.E.w1, ...), so HF-layout
safetensors load by name."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from wattserve.errors import UsageError
from wattserve.runtime.engine.config import ModelConfig
from wattserve.runtime.layers.attention import AttnMetadata, LayerInputs, PagedAttention
from wattserve.runtime.layers.mlp import SparseMoE, SwiGLU
from wattserve.runtime.layers.norm import RMSNorm
from wattserve.runtime.layers.rotary import Rotary


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden, cfg.rms_eps)
        self.self_attn = PagedAttention(cfg.hidden, cfg.heads, cfg.kv_heads, cfg.head_dim)
        self.post_attention_layernorm = RMSNorm(cfg.hidden, cfg.rms_eps)
        self.is_moe = cfg.experts > 0
        if self.is_moe:
            self.block_sparse_moe = SparseMoE(cfg.hidden, cfg.ffn, cfg.experts, cfg.experts_per_token, cfg.ep)
        else:
            self.mlp = SwiGLU(cfg.hidden, cfg.ffn)

    def forward(self, x: torch.Tensor, li: LayerInputs, k_cache: torch.Tensor, v_cache: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), li, k_cache, v_cache)
        h = self.post_attention_layernorm(x)
        return x + (self.block_sparse_moe(h) if self.is_moe else self.mlp(h))


class LlamaModel(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab, cfg.hidden)
        self.layers = nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg.layers)])
        self.norm = RMSNorm(cfg.hidden, cfg.rms_eps)


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg: ModelConfig, device: torch.device) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = LlamaModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab, bias=False)
        self.rotary = Rotary(cfg.head_dim, cfg.rope_theta, cfg.max_positions, device, cfg.rope_scaling)

    def forward(self, input_ids: torch.Tensor, meta: AttnMetadata, k_caches: list[torch.Tensor],
                v_caches: list[torch.Tensor], block_size: int) -> torch.Tensor:
        """Hidden states of a step's flattened tokens. Everything here is tensor work on the device
        (no host syncs in dense models), so a decode step can be captured in a CUDA graph."""
        x = self.model.embed_tokens(input_ids)
        cos, sin = self.rotary.table(meta.positions, x.dtype)
        mask = None
        d = meta.decode
        if d is not None:
            width = d.block_tables.shape[1] * block_size
            keep = torch.arange(width, device=x.device).unsqueeze(0) < d.context_lens.unsqueeze(1)
            mask = torch.zeros(keep.shape, dtype=x.dtype, device=x.device).masked_fill(~keep, float("-inf"))
            mask = mask[:, None, None, :]
        li = LayerInputs(meta, cos, sin, mask, block_size)
        for i, layer in enumerate(self.model.layers):
            x = layer(x, li, k_caches[i], v_caches[i])
        return self.model.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden).float()

    def init_dummy(self, seed: int) -> None:
        """Seeded random weights, like vLLM's --load-format dummy: same seed, same model."""
        g = torch.Generator(device="cpu").manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
                    p.fill_(1.0)
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        if self.cfg.tied_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def load_safetensors(self, path: Path) -> None:
        from safetensors.torch import load_file

        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise UsageError(f"weights: no *.safetensors files in {str(path)!r}")
        own = self.state_dict()
        seen: set[str] = set()
        with torch.no_grad():
            for f in files:
                for name, tensor in load_file(str(f)).items():
                    if name not in own:
                        continue
                    if own[name].shape != tensor.shape:
                        raise UsageError(f"weights: {name} has shape {tuple(tensor.shape)} in {f.name}, "
                                         f"the model expects {tuple(own[name].shape)}")
                    own[name].copy_(tensor.to(own[name].dtype))
                    seen.add(name)
        if "lm_head.weight" not in seen and "model.embed_tokens.weight" in seen:
            self.lm_head.weight = self.model.embed_tokens.weight
            seen.add("lm_head.weight")
        missing = sorted(set(own) - seen)
        if missing:
            raise UsageError(f"weights: {len(missing)} tensors missing from {str(path)!r}, e.g. {missing[0]}")


