"""A word-level interpolated Kneser-Ney trigram model: the honest language model for a CPU budget of seconds.

It is deterministic, trains on a few hundred thousand tokens in about a second, and responds to what data
curation changes: wasted budget (duplicates, markup, boilerplate) and polluted statistics. The vocabulary is fixed
by the evaluator (from clean text), so every corpus is scored over the same events; held-out perplexity counts only
in-vocabulary targets, while `<unk>` keeps the mass a noisy corpus wastes on junk words.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import TypedDict

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
DISCOUNT = 0.75
_TOKEN = re.compile(r"[a-z]+|\d+|[^\sa-z\d]")
STOPWORDS = frozenset({
    "the", "a", "an", "of", "to", "in", "is", "and", "or", "for", "be", "that", "this", "it", "with", "as", "on",
    "by", "are", "not", "if", "from", "at", "which", "can", "its",
})


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def build_vocab(texts: Iterable[str], min_count: int = 2) -> dict[str, int]:
    """Words seen at least `min_count` times in `texts`, with their counts (the closed vocabulary)."""
    counts = Counter(tok for text in texts for tok in tokenize(text))
    return {w: c for w, c in counts.items() if c >= min_count}


class KneserNeyTrigram:
    """Interpolated Kneser-Ney with one discount per order; unigram level interpolated with the uniform law."""

    def __init__(self, vocab: dict[str, int]):
        self.vocab = vocab
        self.size = len(vocab) + 2  # + </s> and <unk>
        self.tri: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        self.tokens_seen = 0

    def _map(self, tok: str) -> str:
        return tok if tok in self.vocab else UNK

    def train(self, documents: Iterable[str], token_budget: int) -> int:
        """Count trigrams over documents in order until `token_budget` tokens are used; returns tokens used."""
        used = 0
        for text in documents:
            toks = [self._map(t) for t in tokenize(text)][: token_budget - used]
            if not toks:
                if used >= token_budget:
                    break
                continue
            seq = [BOS, BOS, *toks, EOS]
            for i in range(2, len(seq)):
                self.tri[(seq[i - 2], seq[i - 1])][seq[i]] += 1
            used += len(toks)
        self.tokens_seen = used
        self._finish()
        return used

    def _finish(self) -> None:
        # Continuation counts: how many distinct left contexts precede each (v, w) and each w.
        bi_cont: dict[str, Counter[str]] = defaultdict(Counter)
        for (_u, v), nexts in self.tri.items():
            for w in nexts:
                bi_cont[v][w] += 1
        uni_cont: Counter[str] = Counter()
        for nexts in bi_cont.values():
            for w in nexts:
                uni_cont[w] += 1
        self.bi_cont = bi_cont
        self.bi_total = {v: sum(c.values()) for v, c in bi_cont.items()}
        self.uni_cont = uni_cont
        self.uni_total = sum(uni_cont.values())
        self.tri_total = {ctx: sum(c.values()) for ctx, c in self.tri.items()}

    def _p_uni(self, w: str) -> float:
        if not self.uni_total:
            return 1.0 / self.size
        reserved = DISCOUNT * len(self.uni_cont) / self.uni_total
        return max(self.uni_cont.get(w, 0) - DISCOUNT, 0) / self.uni_total + reserved / self.size

    def _p_bi(self, v: str, w: str) -> float:
        total = self.bi_total.get(v)
        if not total:
            return self._p_uni(w)
        nexts = self.bi_cont[v]
        return max(nexts.get(w, 0) - DISCOUNT, 0) / total + DISCOUNT * len(nexts) / total * self._p_uni(w)

    def prob(self, u: str, v: str, w: str) -> float:
        total = self.tri_total.get((u, v))
        if not total:
            return self._p_bi(v, w)
        nexts = self.tri[(u, v)]
        return max(nexts.get(w, 0) - DISCOUNT, 0) / total + DISCOUNT * len(nexts) / total * self._p_bi(v, w)

    def perplexity(self, documents: Iterable[str], max_tokens: int) -> tuple[float, int]:
        """Perplexity over in-vocabulary targets (and </s>) of `documents`, up to `max_tokens` targets."""
        nll, n = 0.0, 0
        for text in documents:
            seq = [BOS, BOS, *(self._map(t) for t in tokenize(text)), EOS]
            for i in range(2, len(seq)):
                if seq[i] == UNK:
                    continue
                nll -= math.log(self.prob(seq[i - 2], seq[i - 1], seq[i]))
                n += 1
                if n >= max_tokens:
                    return math.exp(nll / n), n
        return math.exp(nll / max(n, 1)), n

    def window_logprob(self, toks: list[str], i: int) -> float:
        """Log-probability of the tokens at i, i+1, i+2 (all a trigram model's scores that depend on toks[i])."""
        seq = [BOS, BOS, *(self._map(t) for t in toks), EOS]
        return sum(math.log(self.prob(seq[j - 2], seq[j - 1], seq[j])) for j in range(i + 2, min(i + 5, len(seq))))


class ClozeProbe(TypedDict):
    """One fill-in-the-blank item: `tokens` with the word at `position` to be chosen among `options`."""

    tokens: list[str]
    position: int
    options: list[str]
    answer: str


def make_cloze_probes(texts: list[str], vocab: dict[str, int], n: int, seed: int,
                      choices: int = 4) -> list[ClozeProbe]:
    """Fill-in-the-blank items from `texts`: a sentence, the position of a content word, the word and distractors
    of similar corpus frequency (so unigram frequency alone does not give the answer away)."""
    rng = random.Random(seed)
    ranked = sorted((w for w in vocab if w.isalpha() and len(w) >= 4 and w not in STOPWORDS), key=lambda w: -vocab[w])
    rank = {w: i for i, w in enumerate(ranked)}
    sentences = [s for text in texts for s in re.split(r"(?<=[.!?])\s+", text) if len(tokenize(s)) >= 8]
    rng.shuffle(sentences)
    probes: list[ClozeProbe] = []
    for sentence in sentences:
        toks = tokenize(sentence)
        slots = [i for i, t in enumerate(toks) if i >= 2 and t in rank]
        if not slots:
            continue
        i = rng.choice(slots)
        r = rank[toks[i]]
        window = [w for w in ranked[max(0, r - 60) : r + 60] if w != toks[i]]
        if len(window) < choices - 1:
            continue
        options = [toks[i], *rng.sample(window, choices - 1)]
        rng.shuffle(options)
        probes.append({"tokens": toks, "position": i, "options": options, "answer": toks[i]})
        if len(probes) >= n:
            break
    return probes


def cloze_accuracy(model: KneserNeyTrigram, probes: list[ClozeProbe]) -> float:
    """Share of probes where the true word scores highest; a tie among k options earns 1/k."""
    credit = 0.0
    for p in probes:
        scores = {}
        for option in p["options"]:
            toks = list(p["tokens"])
            toks[p["position"]] = option
            scores[option] = model.window_logprob(toks, p["position"])
        best = max(scores.values())
        tied = [o for o, s in scores.items() if s == best]
        credit += (p["answer"] in tied) / len(tied)
    return credit / max(len(probes), 1)
