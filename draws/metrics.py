"""The draws' figures, per process (summed across processes at scrape): every entry
decision by outcome. The outcomes are a fixed set (``entered``, ``again``, and the
refusal reasons of ``draws.refusals``): a bounded label."""

from __future__ import annotations

from prometheus_client import Counter

from core.metrics import PREFIX

ENTRY_DECISIONS = Counter(
    f"{PREFIX}_draw_entry_decisions",
    "Draw entries decided, by outcome: entered (a new entry), again (the viewer's entry"
    " returned), or the reason it was refused.",
    ["outcome"],
)
