"""Prompts of a given length in the server's own tokens (issue 17).

vLLM's bench sizes its random prompts in the model's tokens: its RandomDataset draws token ids from
the tokenizer's vocabulary, decodes them and re-encodes the text to fix the length. A client over
HTTP has no vocabulary, but vLLM, SGLang and `wattserve serve` all answer POST /tokenize with the
server's own count, so the load generator asks it. Asking once per prompt would cost as many calls
as requests (10,000 for a big run); instead the prompts are built from words whose token cost is
measured once: a prompt is one word, then words each preceded by a space, and tokenizers that split
text at spaces before tokenizing (GPT-2 and Llama 3 BPE, SentencePiece, the byte tokenizer) count
such a text as the sum of its words' costs plus their own special tokens (BOS). The calibration
takes 2 calls per word, and a sample of the finished prompts is tokenized to check the sum held.

What the server counts is what matters: a word's cost as the first word includes the special
tokens the server adds, so that the `prompt_tokens` in its usage is the length asked for. A chat
request's prompt is its chat template around the message: where /tokenize takes messages (vLLM's
does) the template's cost is measured and the content made that much shorter; elsewhere the content
alone is sized, as vLLM's bench sizes it, and the result's unit says so."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wattserve.errors import UsageError
from wattserve.loadgen.failures import describe, http_error

if TYPE_CHECKING:
    from wattserve.schema.bench import BenchConfig

WORDS = ("power", "budget", "token", "decode", "prefill", "cluster", "watt", "clock", "cache", "serve")
"""The words a prompt is drawn from."""
FILLERS = ("a", "an", "the", "on", "at")
"""Short words that end a prompt exactly on its length, where a tokenizer counts bytes (a byte
tokenizer costs " power" 6 tokens; " a" 2 and " the" 4 fill the gaps)."""
TOKENIZE_PATH = "/tokenize"
ABSENT = (404, 405, 501)
"""Statuses of a server without /tokenize: the run falls back to words."""
SAMPLE = 8
"""Finished prompts tokenized to check that a prompt's count is its words' costs added up."""
UNIT_TOKENS = "tokens (server)"
UNIT_WORDS = "words"
UNIT_CHAT = "tokens (server), before the chat template"
"""A chat request's message content is sized as vLLM's bench sizes it, where /tokenize cannot say
what the server's chat template adds around it (the server counts those tokens too)."""
TOKENIZE_TIMEOUT_S = 60.0
"""Longest the calibration and the check may take together (a few dozen short calls)."""


def word_prompt(n_words: int, rng: random.Random) -> str:
    """n_words whitespace-separated words (--tokenizer words): about n_words tokens for a BPE
    tokenizer, but bytes plus one for a byte-level one, so only for servers without /tokenize."""
    return " ".join(rng.choice(WORDS) for _ in range(max(1, n_words)))


class NoTokenizer(Exception):
    """The server has no /tokenize (it answered 404, 405 or 501)."""


@dataclass(frozen=True)
class Calibration:
    """The server's token cost of each word: `first`, as a whole prompt (its special tokens
    included), and `rest`, added by " word" after another word."""
    first: dict[str, int]
    rest: dict[str, int]

    @property
    def window(self) -> int:
        """Tokens left to the exact fill at the end of a prompt: enough that any remainder the
        fillers can reach is reachable."""
        return 3 * max(self.rest.values())


@dataclass
class Prompt:
    text: str
    tokens: int
    """Its length by the calibration: the length asked for, or the nearest the tokenizer makes."""


@dataclass
class Check:
    """How a sample of the finished prompts tokenized: `exact` of `sampled` counted as planned;
    `asked_off` prompts could not be made the length asked for (shorter than any one word, or a
    remainder no filler reaches), off by at most `max_off_asked` tokens."""
    sampled: int
    exact: int
    max_off: int
    asked_off: int
    max_off_asked: int

    def as_json(self) -> dict[str, int]:
        return {"sampled": self.sampled, "exact": self.exact, "max_off_tokens": self.max_off,
                "not_as_asked": self.asked_off, "max_off_asked_tokens": self.max_off_asked}


def token_count(data: Any) -> int:
    """The count in a /tokenize answer: vLLM and SGLang both send {"tokens", "count",
    "max_model_len"} (SGLang's count is a list when the prompt is a list; one prompt is sent here),
    and a server that sends only the tokens is counted by them."""
    if isinstance(data, dict):
        count = data.get("count")
        if isinstance(count, list) and len(count) == 1:
            count = count[0]
        if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
            return count
        tokens = data.get("tokens")
        if isinstance(tokens, list):
            return len(tokens)
    raise UsageError(f"--tokenizer server: {TOKENIZE_PATH} answered {str(data)[:120]!r}, with no token count; "
                     "use --tokenizer words")


CountTokens = Callable[[str], Any]
"""An async function: the server's token count of a text."""


def http_counter(session: Any, base_url: str, model: str | None, api_key: str | None, chat: bool = False
                 ) -> CountTokens:
    """POST /tokenize {"prompt": text} (the body vLLM and SGLang share; their default
    add_special_tokens=true counts the BOS the server adds to a completion's prompt), or with `chat`
    {"messages": [one user message]}, which vLLM's /tokenize counts through the chat template."""
    url = base_url.rstrip("/") + TOKENIZE_PATH
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def count(text: str) -> int:
        body: dict[str, Any] = {"messages": [{"role": "user", "content": text}]} if chat else {"prompt": text}
        if model:
            body["model"] = model
        async with session.post(url, json=body, headers=headers) as r:
            if r.status in ABSENT:
                raise NoTokenizer(str(r.status))
            if r.status != 200:
                why = http_error(r.status, await r.text(errors="replace"))
                raise UsageError(f"--tokenizer server: POST {url} answered {why}; use --tokenizer words")
            try:
                return token_count(await r.json(content_type=None))
            except ValueError:
                raise UsageError(f"--tokenizer server: POST {url} answered with something that is not JSON; "
                                 "use --tokenizer words") from None

    return count


@dataclass
class ChatCount:
    """How a server counts a chat request: `count` of one user message's content through its chat
    template, which adds `overhead` tokens to the content's own count."""
    count: CountTokens
    overhead: int


async def chat_count(session: Any, a: BenchConfig, count: CountTokens) -> ChatCount | None:
    """The chat template's cost, where /tokenize takes messages (vLLM); None where it takes only
    prompts (SGLang, wattserve serve), and the content alone is sized, as vLLM's bench sizes it."""
    chat = http_counter(session, a.base_url, a.model, a.api_key, chat=True)
    try:
        whole, alone = await asyncio.gather(chat(WORDS[0]), count(WORDS[0]))
    except (UsageError, NoTokenizer):
        return None
    return ChatCount(chat, whole - alone) if whole > alone else None


async def calibrate(count: CountTokens) -> Calibration:
    """Each word's cost first and after a space, from 2 concurrent calls per word."""
    anchor = WORDS[0]
    words = WORDS + FILLERS
    texts = [anchor, *words, *(f"{anchor} {w}" for w in words)]
    counts = await asyncio.gather(*(count(t) for t in texts))
    base, firsts, pairs = counts[0], counts[1:1 + len(words)], counts[1 + len(words):]
    rest = {w: pair - base for w, pair in zip(words, pairs)}
    if min(rest.values()) < 1:
        raise UsageError(f"--tokenizer server: {TOKENIZE_PATH} counts {anchor!r} followed by a word as no longer "
                         "than the word alone; use --tokenizer words")
    return Calibration(dict(zip(words, firsts)), rest)


def fills(cal: Calibration, limit: int) -> list[tuple[str, ...] | None]:
    """fills[r]: words (each after a space) whose costs add up to r tokens, for r up to `limit`;
    None where no words do. A few words at most, so prompts stay random words."""
    table: list[tuple[str, ...] | None] = [None] * (limit + 1)
    table[0] = ()
    for r in range(1, limit + 1):
        for w, cost in sorted(cal.rest.items(), key=lambda kv: -kv[1]):
            prev = table[r - cost] if cost <= r else None
            if prev is not None:
                table[r] = (*prev, w)
                break
    return table


@dataclass
class Sizer:
    """Builds prompts of n tokens by the calibration (see the module's docstring)."""
    cal: Calibration
    table: list[tuple[str, ...] | None] = field(init=False)
    window: int = field(init=False)
    most: int = field(init=False)
    """The dearest word after a space: a batch of random words stops short of the window."""

    def __post_init__(self) -> None:
        self.window = self.cal.window
        self.most = max(self.cal.rest[w] for w in WORDS)
        self.table = fills(self.cal, 2 * self.window)

    def reachable(self, left: int) -> bool:
        return 0 <= left < len(self.table) and self.table[left] is not None

    def prompt(self, n: int, rng: random.Random) -> Prompt:
        """Random words while more than the window is left, then fillers to exactly n; where the
        fillers cannot reach the remainder the last words give theirs back and it is tried again."""
        words = [self.first_word(n, rng)]
        left = n - self.cal.first[words[0]]
        while left > self.window:
            batch = rng.choices(WORDS, k=(left - self.window) // self.most + 1)
            words += batch
            left -= sum(map(self.cal.rest.__getitem__, batch))
        while not self.reachable(left) and len(words) > 1 and \
                left + self.cal.rest[words[-1]] < len(self.table):
            left += self.cal.rest[words.pop()]
        tail = (self.table[left] or ()) if self.reachable(left) else self.nearest(left)
        return Prompt(" ".join(words + list(tail)), n - left + sum(self.cal.rest[w] for w in tail))

    def first_word(self, n: int, rng: random.Random) -> str:
        """A word that can start a prompt of n tokens: one of WORDS, else a filler (a short prompt),
        else the one coming nearest n (a prompt shorter than any word the tokenizer makes)."""
        def works(w: str) -> bool:
            left = n - self.cal.first[w]
            return left > self.window or self.reachable(left)

        for pool in (WORDS, WORDS + FILLERS):
            fit = [w for w in pool if works(w)]
            if fit:
                return rng.choice(fit)
        return min(WORDS + FILLERS, key=lambda w: (abs(n - self.cal.first[w]), self.cal.first[w], w))

    def nearest(self, left: int) -> tuple[str, ...]:
        """The fill of the reachable remainder closest to `left` (shorter first): how a tokenizer
        that cannot make n tokens gets within a token or so of it."""
        reach = [r for r, t in enumerate(self.table) if t is not None]
        return self.table[min(reach, key=lambda r: (abs(r - left), r))] or ()


def sample(prompts: list[Prompt], k: int = SAMPLE) -> list[Prompt]:
    """Up to k prompts spread over the lengths (the shortest and the longest among them)."""
    ranked = sorted(range(len(prompts)), key=lambda i: (prompts[i].tokens, i))
    if len(ranked) <= k:
        return [prompts[i] for i in ranked]
    step = (len(ranked) - 1) / (k - 1)
    return [prompts[ranked[round(j * step)]] for j in range(k)]


async def check(count: CountTokens, prompts: list[Prompt], asked: list[int]) -> Check:
    """Tokenize a sample of the prompts: did each count as planned?"""
    picked = sample(prompts)
    got = await asyncio.gather(*(count(p.text) for p in picked))
    offs = [abs(g - p.tokens) for g, p in zip(got, picked)]
    asked_offs = [abs(p.tokens - n) for p, n in zip(prompts, asked) if p.tokens != n]
    return Check(len(picked), offs.count(0), max(offs, default=0), len(asked_offs), max(asked_offs, default=0))


def check_lines(c: Check, asked_words: str) -> list[str]:
    """What the user must know before the run: prompts not of the length asked for, or a
    tokenizer that did not count as calibrated (never silently)."""
    lines = []
    if c.asked_off:
        lines.append(f"wattserve bench: {c.asked_off} prompts cannot be made exactly as long as {asked_words} by the "
                     f"server's tokenizer; they are off by at most {c.max_off_asked} "
                     f"token{'s' if c.max_off_asked > 1 else ''}")
    if c.exact < c.sampled:
        lines.append(f"wattserve bench: {c.sampled - c.exact} of {c.sampled} sampled prompts tokenized to other "
                     f"lengths than planned (off by up to {c.max_off} tokens): the server's tokenizer does not "
                     "count words one by one")
    return lines


@dataclass
class Sizing:
    """The prompts, the unit their lengths were counted in (the result's `input_len_unit`), the
    sample check (None in words), and the lines to print before the run."""
    prompts: list[str]
    unit: str
    check: Check | None = None
    notes: list[str] = field(default_factory=list)


def in_words(lengths: list[int], rng: random.Random, notes: list[str] | None = None) -> Sizing:
    return Sizing([word_prompt(n, rng) for n in lengths], UNIT_WORDS, None, notes or [])


async def size_prompts(a: BenchConfig, lengths: list[int], asked: str) -> Sizing:
    """A prompt of each length, in the server's tokens unless --tokenizer words. A server without
    /tokenize gets words and a line saying so; with --tokenizer server given explicitly it is refused."""
    rng = random.Random(a.seed)
    if a.tokenizer == "words":
        return in_words(lengths, rng)
    import aiohttp

    url = a.base_url.rstrip("/") + TOKENIZE_PATH
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TOKENIZE_TIMEOUT_S)) as session:
            count = http_counter(session, a.base_url, a.model, a.api_key)
            sizer = Sizer(await calibrate(count))
            chat = await chat_count(session, a, count) if "chat" in a.endpoint else None
            extra = chat.overhead if chat else 0
            prompts = [sizer.prompt(max(1, n - extra), rng) for n in lengths]
            prompts = [Prompt(p.text, p.tokens + extra) for p in prompts]
            c = await check(chat.count if chat else count, prompts, lengths)
    except NoTokenizer as e:
        if "tokenizer" in a.model_fields_set:
            raise UsageError(f"--tokenizer server: POST {url} answered {e}: the server has no /tokenize; "
                             "allowed: --tokenizer words (lengths in whitespace words)") from None
        return in_words(lengths, rng, [f"wattserve bench: POST {url} answered {e}, so prompt lengths are counted "
                                       "in whitespace words, not the server's tokens (--tokenizer words)"])
    except (aiohttp.ClientError, TimeoutError) as e:
        why = f"timed out after {TOKENIZE_TIMEOUT_S:g} s" if type(e) is TimeoutError else describe(e)
        raise UsageError(f"--tokenizer server: POST {url}: {why}; use --tokenizer words") from None
    unit = UNIT_CHAT if "chat" in a.endpoint and chat is None else UNIT_TOKENS
    return Sizing([p.text for p in prompts], unit, c, check_lines(c, asked))
