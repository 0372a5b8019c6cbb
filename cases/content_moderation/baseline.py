"""The baseline every model must beat: a blocklist plus hand-written rules, per policy.

    rules = ModerationRules()
    scores = rules.score(texts, policies)      # (N, P) counts of rule hits, higher = worse

This is what a trust-and-safety team ships on day one. It is cheap, explainable and fast, and it
fails in two known ways: obfuscation ("1d10t") slips through, and benign uses of a listed word
("this heat is killing me", "he called me an idiot so I reported him") are flagged. The score
is the number of rules that fire, so PR-AUC and precision at a recall are defined for it too.
"""

from __future__ import annotations

import re

import numpy as np

from .data import IDENTITIES, POLICY_FAMILY

_WORDS = {
    "offensive": [
        "idiot", "moron", "loser", "stupid", "dumb", "trash", "garbage", "pathetic", "scumbag",
        "jerk", "clown", "fool", "shut up", "worthless", "fuck", "fucking", "shit", "bitch",
        "ass", "asshole", "damn", "hell", "crap", "retard", "retarded", "hoe", "pussy", "kill",
        "killing", "hate", "liar", "disgusting", "ugly",
    ],
    "hate": [
        "vermin", "subhuman", "disease", "go back", "back where they came", "banned from",
        "ruin everything", "do not deserve", "animals", "savages", "invaders", "faggot",
        "nigger", "nigga", "dyke", "tranny", "kike", "raghead", "wetback", "beaner",
    ],
    "spam": [
        "free", "click", "buy now", "limited offer", "follow back", "followers", "deal", "deals",
        "cheap", "best price", "win", "winner", "earn money", "txt", "text", "call now", "offer",
        "prize", "claim", "subscribe", "promo",
    ],
    "scam": [
        "gift card", "gift cards", "verify your", "password", "bitcoin", "crypto", "wallet",
        "bank details", "wire", "lottery", "fee", "guaranteed", "double your", "prince",
        "card number", "deposit", "customs", "account is locked", "urgent",
    ],
}  # fmt: skip
_URL = re.compile(r"https?://|www\.|\bURL\b|\.ly/|\.com/", re.I)
_IDENTITY = re.compile(
    r"\b(" + "|".join(w for ws in IDENTITIES.values() for w in ws) + r")\b", re.I
)


def _pattern(words: list[str]) -> re.Pattern:
    return re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.I)


class ModerationRules:
    """Blocklist and rules per policy; `score` counts the rules that fire.

    offensive: listed words; hate: a hate phrase, or an identity word next to an offensive word;
    spam: listed words, plus 1 per URL; scam: listed phrases, plus 1 for a URL with money words.
    """

    def __init__(self) -> None:
        self.patterns = {p: _pattern(ws) for p, ws in _WORDS.items()}

    def score(self, texts: list[str], policies: tuple[str, ...]) -> np.ndarray:
        """(N, P) float rule-hit counts for the given policies; a policy named by a file counts
        the rules of its built-in family (data.POLICY_FAMILY), an unknown one scores 0."""
        out = np.zeros((len(texts), len(policies)), np.float32)
        for i, t in enumerate(texts):
            hits = {p: len(rx.findall(t)) for p, rx in self.patterns.items()}
            urls = len(_URL.findall(t))
            ident = bool(_IDENTITY.search(t))
            extra = {
                "hate": int(ident and hits["offensive"] > 0),
                "spam": urls,
                "scam": int(urls > 0 and hits["scam"] > 0),
            }
            for j, p in enumerate(policies):
                f = p if p in hits else POLICY_FAMILY.get(p, p)  # Jigsaw's insult: offensive
                out[i, j] = hits.get(f, 0) + extra.get(f, 0)
        return out

    def flags(self, texts: list[str], policies: tuple[str, ...]) -> np.ndarray:
        """(N, P) 0/1 decisions: at least one rule fired."""
        return (self.score(texts, policies) > 0).astype(np.int8)
