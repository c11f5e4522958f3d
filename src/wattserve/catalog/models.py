"""LLM architectures and the work one engine iteration does on them.

Architectural constants are the models' published Hugging Face `config.json` values
(meta-llama/Llama-3.1-8B, meta-llama/Llama-3.1-70B (= Llama-3.3-70B), meta-llama/Llama-2-70b-hf,
mistralai/Mixtral-8x7B-v0.1, Qwen/Qwen3-30B-A3B). Weights are BF16 (2 bytes per parameter).

`ModelSpec.work` turns a batch (prefill chunks with their context, decode sequences with theirs) into
FLOPs and bytes per tensor-parallel rank. Why the split matters: linear layers are weight-streaming
bound at small batch and compute bound at large batch, while decode attention is always bound by
reading the KV cache (its arithmetic intensity is the GQA group size, far below any GPU's ridge
point), so a roofline per operator class gives the right shape of latency vs batch.

Mixture-of-experts placement (docs/moe.md). With tensor parallelism alone every rank holds a 1/tp
slice of every expert, so every rank does the same expert work whatever the routing. With expert
parallelism (vLLM's `enable_expert_parallel` inside one instance, ep = tp) attention stays
tensor-parallel and the experts are spread whole, experts/ep per rank; the step then waits for the
busiest rank. Routing skew is one number, the busiest expert's share s of the (token, expert)
assignments: a token picks k distinct experts, so uniform routing gives s = 1/E and s can be at most
1/k (the busiest expert is then in every token's top-k); the other E-1 experts share the rest evenly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from math import comb

from wattserve.errors import unknown

BYTES_PER_PARAM = 2


@dataclass(slots=True)
class BatchShape:
    """What one engine iteration computes.

    prefill_attn_pairs is sum over chunks of chunk * (context_before + (chunk + 1) / 2): the causal
    query-key pairs, which set prefill attention FLOPs. prefill_ctx is sum of context_before, the KV
    already cached that the chunks attend to. decode_ctx is the total context of the decode sequences.

    prefill_masked_pairs is sum over chunks of chunk * (chunk - 1) / 2: the pairs above each chunk's
    causal diagonal, which an attention kernel that does not skip masked tiles computes anyway
    (FlashAttention skips whole tiles only, so a chunk shorter than a tile is computed as a full
    rectangle; our CPU engine's steps time as if every chunk of up to 512 tokens were computed whole). How much
    of it a given engine pays is a fitted constant (perf/latency.py, attn_masked_share).
    """

    prefill_tokens: int = 0
    prefill_seqs: int = 0
    prefill_attn_pairs: float = 0.0
    prefill_ctx: int = 0
    decode_seqs: int = 0
    decode_ctx: int = 0
    prefill_masked_pairs: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prefill_tokens + self.decode_seqs

    @staticmethod
    def prefill(tokens_per_seq: int, seqs: int = 1, context_before: int = 0) -> BatchShape:
        pairs = tokens_per_seq * (context_before + (tokens_per_seq + 1) / 2)
        return BatchShape(
            prefill_tokens=tokens_per_seq * seqs, prefill_seqs=seqs, prefill_attn_pairs=pairs * seqs,
            prefill_ctx=context_before * seqs, prefill_masked_pairs=seqs * tokens_per_seq * (tokens_per_seq - 1) / 2,
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
    alltoall_bytes: float = 0.0
    """Each rank's buffer in one MoE dispatch (or combine) all-to-all."""
    alltoall_calls: int = 0


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
    alltoall_bytes_per_token: float = 0.0
    alltoall_calls: int = 0


@lru_cache(maxsize=64)
def expected_busiest_group(experts: int, groups: int) -> tuple[float, ...]:
    """E[largest count in one group] when d of `experts` experts, split into `groups` equal groups,
    are touched uniformly at random without replacement; entry d for d = 0..experts.

    Exact (multivariate hypergeometric): the ways to touch d experts with at most c in every group
    are the x**d coefficient of (sum_{j<=c} C(m, j) x**j)**groups, m = experts / groups, and
    E[max] = sum_c P(max > c). Why: with expert parallelism a step waits for the rank that reads the
    most distinct experts, which at small batch exceeds the mean (Mixtral, one token, 4 ranks: both
    chosen experts share a rank with probability 1/7)."""
    m = experts // groups
    out = [0.0] * (experts + 1)
    for c in range(m):
        poly = [1]
        part = [comb(m, j) for j in range(c + 1)]
        for _ in range(groups):
            nxt = [0] * (len(poly) + c)
            for i, a in enumerate(poly):
                if a:
                    for j, b in enumerate(part):
                        nxt[i + j] += a * b
            poly = nxt
        for d in range(experts + 1):
            fit = poly[d] if d < len(poly) else 0
            out[d] += 1.0 - fit / comb(experts, d)
    return tuple(out)


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
        """Also right under expert parallelism with ep = tp: a rank holds E/ep whole experts instead
        of a 1/tp slice of each, the same bytes."""
        return self.weight_bytes / tp

    @property
    def uniform_share(self) -> float:
        """The busiest expert's share of (token, expert) assignments under uniform routing: 1/E."""
        return 1.0 / self.experts if self.is_moe else 0.0

    @property
    def max_share(self) -> float:
        """The largest possible share, 1/k: the expert is in every token's top-k."""
        return 1.0 / self.experts_per_token if self.is_moe else 0.0

    def touch_probs(self, skew: float | None = None) -> tuple[float, float]:
        """Probability that one token routes to the busiest expert, and to each other expert: k times
        the expert's share of assignments (a token's k picks are distinct)."""
        s = self.uniform_share if skew is None else skew
        k = self.experts_per_token
        return k * s, k * (1.0 - s) / (self.experts - 1)

    def experts_touched(self, tokens: int, skew: float | None = None) -> float:
        """Expected distinct experts a layer reads for `tokens` tokens under top-k routing, tokens
        routed independently; `skew` is the busiest expert's share (None: uniform)."""
        if not self.is_moe or tokens <= 0:
            return 0.0
        if skew is None:
            miss = (1.0 - self.experts_per_token / self.experts) ** tokens
            return self.experts * (1.0 - miss)
        p_hot, p_other = self.touch_probs(skew)
        return 1.0 - (1.0 - p_hot) ** tokens + (self.experts - 1) * (1.0 - (1.0 - p_other) ** tokens)

    def busiest_rank_share(self, ep: int, skew: float | None = None) -> float:
        """Share of assignments on the rank holding the busiest expert when experts are spread whole
        over `ep` ranks: that expert's share plus its E/ep - 1 rank-mates' (1/ep when uniform)."""
        s = self.uniform_share if skew is None else skew
        per_rank = self.experts // ep
        return s + (per_rank - 1) * (1.0 - s) / (self.experts - 1)

    def busiest_rank_experts(self, tokens: int, ep: int, skew: float | None = None) -> float:
        """Expected distinct experts the busiest of `ep` expert-parallel ranks reads (see `expert_reads`)."""
        return self.expert_reads(ep, skew)(tokens)

    def expert_reads(self, ep: int = 1, skew: float | None = None) -> Callable[[int], float]:
        """Tokens -> expected distinct experts per layer whose weights the (busiest) rank reads,
        with the constants folded once, since the latency model calls it every simulator step.

        ep = 1: `experts_touched`. ep > 1: the larger of the expected largest per-rank count when
        the touched experts fall on ranks at random (`expected_busiest_group`, interpolated in the
        expected number touched) and, under skew, the hot rank's own expectation."""
        e = self.experts
        if not self.is_moe:
            return lambda tokens: 0.0
        p_hot, p_other = self.touch_probs(skew)
        q_hot, q_other = 1.0 - p_hot, 1.0 - p_other
        if ep == 1:
            if skew is None:
                miss = 1.0 - self.experts_per_token / e
                return lambda tokens: e * (1.0 - miss**tokens) if tokens > 0 else 0.0
            return lambda tokens: (1.0 - q_hot**tokens + (e - 1) * (1.0 - q_other**tokens)) if tokens > 0 else 0.0
        table = expected_busiest_group(e, ep)
        mates = e // ep - 1
        skewed = skew is not None

        def reads(tokens: int) -> float:
            if tokens <= 0:
                return 0.0
            hot = 1.0 - q_hot**tokens
            other = 1.0 - q_other**tokens
            d = hot + (e - 1) * other
            lo = int(d)
            busiest = table[lo] if lo >= e else table[lo] + (d - lo) * (table[lo + 1] - table[lo])
            if skewed:
                own = hot + mates * other
                if own > busiest:
                    busiest = own
            return busiest

        return reads

    def work_coeffs(self, tp: int, ep: int = 1, skew: float | None = None) -> WorkCoeffs:
        """Per-unit costs on one TP rank (the busiest one under expert parallelism); `Work` is linear
        in the batch except MoE expert reads.

        With ep > 1 (ep = tp) a rank runs whole experts: expert FLOPs follow the busiest rank's
        share of assignments, expert weights are read whole, and the MoE block's TP all-reduce is
        replaced by a dispatch and a combine all-to-all, each rank sending its 1/ep of the step's
        tokens * k hidden vectors. The attention all-reduce stays (as a reduce-scatter before the
        dispatch and an all-gather after the combine, which together move an all-reduce's bytes).
        Without EP, skew leaves each rank's FLOPs unchanged: every rank runs its slice of every
        expert."""
        active_ffn = self.ffn * (self.experts_per_token if self.is_moe else 1)
        expert_flops = 2.0 * self.layers * self.experts_per_token * self.expert_params if self.is_moe else 0.0
        other_flops = 2.0 * (self.active_params_per_token - self.vocab * self.hidden) - expert_flops
        dense = self.layers * self.attn_params_per_layer + self.embedding_params
        if self.is_moe:
            dense += self.layers * self.hidden * self.experts
        else:
            dense += self.layers * self.mlp_params_per_layer
        expert_params = self.expert_params * BYTES_PER_PARAM
        if ep > 1:
            expert_share = self.busiest_rank_share(ep, skew)
            expert_bytes = float(expert_params)
            allreduce_calls = self.layers
        else:
            expert_share = 1.0 / tp
            expert_bytes = expert_params / tp if self.is_moe else 0.0
            allreduce_calls = 2 * self.layers if tp > 1 else 0
        return WorkCoeffs(
            flops_per_token=other_flops / tp + expert_flops * expert_share,
            flops_per_logit=2.0 * self.vocab * self.hidden / tp,
            dense_weight_bytes=dense * BYTES_PER_PARAM / tp,
            expert_bytes_per_layer=expert_bytes,
            attn_flops_per_pair=4.0 * self.layers * self.heads * self.head_dim / tp,
            kv_bytes_per_token=self.kv_bytes_per_token_per_rank(tp),
            elementwise_bytes_per_token=self.layers * (16 * self.hidden + 4 * active_ffn) * BYTES_PER_PARAM / tp,
            allreduce_bytes_per_token=self.hidden * BYTES_PER_PARAM if tp > 1 else 0.0,
            allreduce_calls=allreduce_calls,
            alltoall_bytes_per_token=self.experts_per_token * self.hidden * BYTES_PER_PARAM / ep if ep > 1 else 0.0,
            alltoall_calls=2 * self.layers if ep > 1 else 0,
        )

    def work(self, b: BatchShape, tp: int, ep: int = 1, skew: float | None = None) -> Work:
        c = self.work_coeffs(tp, ep, skew)
        tokens = b.tokens
        touched = self.busiest_rank_experts(tokens, ep, skew) if ep > 1 else self.experts_touched(tokens, skew)
        weight = c.dense_weight_bytes + self.layers * touched * c.expert_bytes_per_layer
        return Work(
            linear_flops=c.flops_per_token * tokens + c.flops_per_logit * (b.prefill_seqs + b.decode_seqs),
            weight_bytes=weight,
            attn_flops=c.attn_flops_per_pair * (b.prefill_attn_pairs + b.decode_ctx),
            kv_bytes=c.kv_bytes_per_token * (b.decode_ctx + b.prefill_ctx + tokens),
            elementwise_bytes=c.elementwise_bytes_per_token * tokens,
            allreduce_bytes=c.allreduce_bytes_per_token * tokens,
            allreduce_calls=c.allreduce_calls,
            alltoall_bytes=c.alltoall_bytes_per_token * tokens,
            alltoall_calls=c.alltoall_calls,
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
    # The runtime's own test and CPU-demo models (runtime/engine/config.py adds what the engine needs),
    # here so that the simulator can mirror the runtime (`wattserve validate`).
    "tiny": ModelSpec("tiny", layers=2, hidden=64, heads=4, kv_heads=2, head_dim=16, ffn=128, vocab=320),
    "tiny-moe": ModelSpec("tiny-moe", layers=2, hidden=64, heads=4, kv_heads=2, head_dim=16, ffn=96, vocab=320,
                          experts=4, experts_per_token=2),
    "small": ModelSpec("small", layers=6, hidden=512, heads=8, kv_heads=4, head_dim=64, ffn=1408, vocab=8192),
}

_ALIASES = {"llama-3.3-70b": "llama-3.1-70b", "llama3-8b": "llama-3.1-8b", "mixtral": "mixtral-8x7b"}


def get_model(name: str) -> ModelSpec:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in MODELS:
        raise unknown("model", name, MODELS)
    return MODELS[key]


def ceil_div(a: int, b: int) -> int:
    return -(-a // b) if b else 0

