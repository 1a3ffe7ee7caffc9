"""CDR (customizable density ratio) reward: log pi_strong(y|x) - log pi_weak(y|x) over response tokens.

Each model re-tokenizes with its own tokenizer (token counts may differ). `length_norm` is
`sum` (the CDR paper's code) or `mean` (per-token, reward_hub's `avg` variant); an optional
template T(x) is applied identically to both models (Xu et al., "Customizable density ratios", arXiv 2411.02481).
"""
from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from policies.logprobs import completion_logprobs, text_rollouts


class CDR:
    def __init__(self, strong_path: str, weak_path: str, name: str = "cdr", length_norm: str = "sum",
                 template: str = "{prompt}", batch_size: int = 64):
        if length_norm not in ("sum", "mean"):
            raise ValueError(f"cdr length_norm {length_norm!r}: expected 'sum' or 'mean'")
        if "{prompt}" not in template:
            raise ValueError("cdr template must contain '{prompt}'")
        self.name, self.length_norm, self.template, self.batch_size = name, length_norm, template, batch_size
        self.models = []
        for path in (strong_path, weak_path):
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True).eval()
            self.models.append((tok, model))

    def _logp(self, tok, model, prompts, responses) -> torch.Tensor:
        lps = completion_logprobs(model, text_rollouts(tok, [self.template.replace("{prompt}", p) for p in prompts],
                                                       responses), self.batch_size)
        return torch.tensor([lp.sum().item() if self.length_norm == "sum" else lp.mean().item() for lp in lps])

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        (ts, ms), (tw, mw) = self.models
        return (self._logp(ts, ms, prompts, responses) - self._logp(tw, mw, prompts, responses)).tolist()
