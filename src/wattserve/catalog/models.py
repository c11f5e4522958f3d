"""LLM architectures and the work one engine iteration does on them.

Architectural constants are the models' published Hugging Face `config.json` values
(meta-llama/Llama-3.1-8B, meta-llama/Llama-3.1-70B (= Llama-3.3-70B), meta-llama/Llama-2-70b-hf,
mistralai/Mixtral-8x7B-v0.1, Qwen/Qwen3-30B-A3B). Weights are BF16 (2 bytes per parameter).

`ModelSpec.work` turns a batch (prefill chunks with their context, decode sequences with theirs) into
FLOPs and bytes per tensor-parallel rank. Why the split matters: linear layers are weight-streaming
bound at small batch and compute bound at large batch, while decode attention is always bound by
reading the KV cache (its arithmetic intensity is the GQA group size, far below any GPU's ridge
point), so a roofline per operator class gives the right shape of latency vs batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from wattserve.errors import unknown

BYTES_PER_PARAM = 2


@dataclass(slots=True)
class BatchShape:
    """What one engine iteration computes.

    prefill_attn_pairs is sum over chunks of chunk * (context_before + (chunk + 1) / 2): the causal
    query-key pairs, which set prefill attention FLOPs. prefill_ctx is sum of context_before, the KV
    already cached that the chunks attend to. decode_ctx is the total context of the decode sequences.
    """

    prefill_tokens: int = 0
    prefill_seqs: int = 0
    prefill_attn_pairs: float = 0.0
    prefill_ctx: int = 0
    decode_seqs: int = 0
    decode_ctx: int = 0

    @property
    def tokens(self) -> int:
        return self.prefill_tokens + self.decode_seqs

    @staticmethod
    def prefill(tokens_per_seq: int, seqs: int = 1, context_before: int = 0) -> BatchShape:
        pairs = tokens_per_seq * (context_before + (tokens_per_seq + 1) / 2)
        return BatchShape(
            prefill_tokens=tokens_per_seq * seqs, prefill_seqs=seqs, prefill_attn_pairs=pairs * seqs,
            prefill_ctx=context_before * seqs,
        )

    @staticmethod
    def decode(seqs: int, context_per_seq: int) -> BatchShape:
        return BatchShape(decode_seqs=seqs, decode_ctx=seqs * context_per_seq)


@dataclass(frozen=True)
class Work:
    """FLOPs and bytes one TP rank moves in one iteration, split by operator class."""

    linear_flops: float
    weight_bytes: float
    attn_flops: float
    kv_bytes: float
    elementwise_bytes: float
    allreduce_bytes: float
    allreduce_calls: int


@dataclass(frozen=True)
class WorkCoeffs:
    flops_per_token: float
    flops_per_logit: float
    dense_weight_bytes: float
    expert_bytes_per_layer: float
    attn_flops_per_pair: float
    kv_bytes_per_token: float
    elementwise_bytes_per_token: float
    allreduce_bytes_per_token: float
    allreduce_calls: int


@dataclass(frozen=True)
class ModelSpec:
    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    experts: int = 0
    experts_per_token: int = 0
    tied_embeddings: bool = False

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    @property
    def attn_params_per_layer(self) -> int:
        q = self.heads * self.head_dim
        kv = self.kv_heads * self.head_dim
        return self.hidden * q + 2 * self.hidden * kv + q * self.hidden

    @property
    def expert_params(self) -> int:
        """One expert's gated MLP (or the dense MLP when not MoE)."""
        return 3 * self.hidden * self.ffn

    @property
    def mlp_params_per_layer(self) -> int:
        if self.is_moe:
            return self.experts * self.expert_params + self.hidden * self.experts
        return self.expert_params

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def total_params(self) -> int:
        return self.layers * (self.attn_params_per_layer + self.mlp_params_per_layer) + self.embedding_params

    @property
    def active_params_per_token(self) -> int:
        """Parameters one token's forward pass multiplies by, LM head included."""
        if self.is_moe:
            mlp = self.experts_per_token * self.expert_params + self.hidden * self.experts
        else:
            mlp = self.expert_params
        return self.layers * (self.attn_params_per_layer + mlp) + self.vocab * self.hidden

    @property
    def weight_bytes(self) -> int:
        return self.total_params * BYTES_PER_PARAM

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V, every layer, all KV heads, BF16."""
        return 2 * self.layers * self.kv_heads * self.head_dim * BYTES_PER_PARAM

    def kv_bytes_per_token_per_rank(self, tp: int) -> float:
        """KV heads shard across TP ranks; past tp == kv_heads they are replicated."""
        return self.kv_bytes_per_token / min(tp, self.kv_heads)

    def weight_bytes_per_rank(self, tp: int) -> float:
        return self.weight_bytes / tp

    def experts_touched(self, tokens: int) -> float:
        """Expected distinct experts a layer reads for `tokens` tokens with uniform top-k routing."""
        if not self.is_moe or tokens <= 0:
            return 0.0
        miss = (1.0 - self.experts_per_token / self.experts) ** tokens
        return self.experts * (1.0 - miss)

    def work_coeffs(self, tp: int) -> WorkCoeffs:
        """Per-unit costs on one TP rank; `Work` is linear in the batch except MoE expert reads."""
        linear_params_per_token = self.active_params_per_token - self.vocab * self.hidden
        active_ffn = self.ffn * (self.experts_per_token if self.is_moe else 1)
        dense = self.layers * self.attn_params_per_layer + self.embedding_params
        if self.is_moe:
            dense += self.layers * self.hidden * self.experts
        else:
            dense += self.layers * self.mlp_params_per_layer
        return WorkCoeffs(
            flops_per_token=2.0 * linear_params_per_token / tp,
            flops_per_logit=2.0 * self.vocab * self.hidden / tp,
            dense_weight_bytes=dense * BYTES_PER_PARAM / tp,
            expert_bytes_per_layer=self.expert_params * BYTES_PER_PARAM / tp if self.is_moe else 0.0,
            attn_flops_per_pair=4.0 * self.layers * self.heads * self.head_dim / tp,
            kv_bytes_per_token=self.kv_bytes_per_token_per_rank(tp),
            elementwise_bytes_per_token=self.layers * (16 * self.hidden + 4 * active_ffn) * BYTES_PER_PARAM / tp,
            allreduce_bytes_per_token=self.hidden * BYTES_PER_PARAM if tp > 1 else 0.0,
            allreduce_calls=2 * self.layers if tp > 1 else 0,
        )

    def work(self, b: BatchShape, tp: int) -> Work:
        c = self.work_coeffs(tp)
        tokens = b.tokens
        weight = c.dense_weight_bytes + self.layers * self.experts_touched(tokens) * c.expert_bytes_per_layer
        return Work(
            linear_flops=c.flops_per_token * tokens + c.flops_per_logit * (b.prefill_seqs + b.decode_seqs),
            weight_bytes=weight,
            attn_flops=c.attn_flops_per_pair * (b.prefill_attn_pairs + b.decode_ctx),
            kv_bytes=c.kv_bytes_per_token * (b.decode_ctx + b.prefill_ctx + tokens),
            elementwise_bytes=c.elementwise_bytes_per_token * tokens,
            allreduce_bytes=c.allreduce_bytes_per_token * tokens,
            allreduce_calls=c.allreduce_calls,
        )

    def kv_capacity_tokens(self, hbm_bytes: float, tp: int, mem_util: float = 0.9,
                           activation_reserve: float = 0.05) -> int:
        """Tokens of KV that fit in a TP group after weights and an activation reserve (as vLLM's
        gpu_memory_utilization does)."""
        per_rank = hbm_bytes * (mem_util - activation_reserve) - self.weight_bytes_per_rank(tp)
        if per_rank <= 0:
            return 0
        return int(per_rank / self.kv_bytes_per_token_per_rank(tp))


MODELS: dict[str, ModelSpec] = {
    "llama-3.1-8b": ModelSpec("Llama-3.1-8B", layers=32, hidden=4096, heads=32, kv_heads=8,
                              head_dim=128, ffn=14336, vocab=128256),
    "llama-3.1-70b": ModelSpec("Llama-3.1-70B", layers=80, hidden=8192, heads=64, kv_heads=8,
                               head_dim=128, ffn=28672, vocab=128256),
    "llama-2-70b": ModelSpec("Llama-2-70B", layers=80, hidden=8192, heads=64, kv_heads=8,
                             head_dim=128, ffn=28672, vocab=32000),
    "mixtral-8x7b": ModelSpec("Mixtral-8x7B", layers=32, hidden=4096, heads=32, kv_heads=8,
                              head_dim=128, ffn=14336, vocab=32000, experts=8, experts_per_token=2),
    "qwen3-30b-a3b": ModelSpec("Qwen3-30B-A3B", layers=48, hidden=2048, heads=32, kv_heads=4,
                               head_dim=128, ffn=768, vocab=151936, experts=128, experts_per_token=8),
}

_ALIASES = {"llama-3.3-70b": "llama-3.1-70b", "llama3-8b": "llama-3.1-8b", "mixtral": "mixtral-8x7b"}


def get_model(name: str) -> ModelSpec:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in MODELS:
        raise unknown("model", name, MODELS)
    return MODELS[key]


def ceil_div(a: int, b: int) -> int:
    return -(-a // b) if b else 0

