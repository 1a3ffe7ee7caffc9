"""CDR (customizable density ratio) reward: log pi_strong(y|x) - log pi_weak(y|x) over response tokens.

Each model re-tokenizes with its own tokenizer (token counts may differ). `length_norm` is
`sum` (the CDR paper's code) or `mean` (per-token, reward_hub's `avg` variant); an optional
template T(x) is applied identically to both models (Xu et al., "Customizable density ratios", arXiv 2411.02481),
unless `strong_template` gives the strong side its own: the paper's customisation, the strong side
conditioned on a criteria prompt (the smol world's CDR is one instruct model with and without a rubric).
"""
from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from policies.logprobs import completion_logprobs, text_rollouts


class CDR:
    def __init__(self, strong_path: str, weak_path: str, name: str = "cdr", length_norm: str = "sum",
                 template: str = "{prompt}", batch_size: int = 64, strong_template: str | None = None):
        if length_norm not in ("sum", "mean"):
            raise ValueError(f"cdr length_norm {length_norm!r}: expected 'sum' or 'mean'")
        for key, t in (("template", template), ("strong_template", strong_template)):
            if t is not None and "{prompt}" not in t:
                raise ValueError(f"cdr {key} must contain '{{prompt}}' (config key reward.{key})")
        self.name, self.length_norm, self.batch_size = name, length_norm, batch_size
        self.templates = (strong_template or template, template)
        loaded = {}
        for path in dict.fromkeys((strong_path, weak_path)):  # one copy when both sides are one model
            tok = AutoTokenizer.from_pretrained(path)
            loaded[path] = (tok, AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True).eval())
        self.models = [loaded[strong_path], loaded[weak_path]]

    def _logp(self, tok, model, template, prompts, responses) -> torch.Tensor:
        lps = completion_logprobs(model, text_rollouts(tok, [template.replace("{prompt}", p) for p in prompts],
                                                       responses), self.batch_size)
        return torch.tensor([lp.sum().item() if self.length_norm == "sum" else lp.mean().item() for lp in lps])

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        (ts, ms), (tw, mw) = self.models
        strong, weak = self.templates
        return (self._logp(ts, ms, strong, prompts, responses) - self._logp(tw, mw, weak, prompts, responses)).tolist()
