"""A plug-and-play LoRA LLM judge: a frozen base LM + a LoRA adapter + a rubric prompt.

The judge answers the rubric with one line of JSON, {"score":N} with N in 0..9. As a reward it
is read without sampling: the expected score over the digit tokens that follow '{"score":'
(Agnihotri & Pandey, arXiv 2506.05748), scaled to [0, 1]. A verdict whose digits get under half of the probability is
counted as a parse failure and scores 0.
"""
from __future__ import annotations

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from policies.logprobs import pad_rollouts, text_rollouts

TEMPLATE = "Rate 0-9 as JSON.\n{prompt}{response}\n"
VERDICT_PREFIX = '{"score":'


def rubric(prompt: str, response: str) -> str:
    return TEMPLATE.replace("{prompt}", prompt).replace("{response}", response)


def expected_score(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From [n, 10] probabilities of the digits 0-9 as the verdict's next token: (the expected digit
    over the digits' mass / 9, 0 where that mass is under half: a parse failure; the parsed mask)."""
    mass = probs.sum(-1)
    ok = mass >= 0.5
    expected = (probs * torch.arange(10)).sum(-1) / mass.clamp_min(1e-9) / 9
    return torch.where(ok, expected, torch.zeros_like(expected)), ok


def verdict(score: int) -> str:
    return json.dumps({"score": int(score)}, separators=(",", ":"))


class LoRAJudge:
    def __init__(self, base_path: str, adapter_path: str, name: str = "judge", batch_size: int = 64):
        from peft import PeftModel

        self.name, self.batch_size = name, batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(base_path)
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32, use_safetensors=True)
        self.model = PeftModel.from_pretrained(base, adapter_path).eval()
        digits = [self.tokenizer(str(k), add_special_tokens=False).input_ids for k in range(10)]
        if any(len(d) != 1 for d in digits):
            raise ValueError("the judge needs one token per digit 0-9 in its tokenizer")
        self.digit_ids = torch.tensor([d[0] for d in digits])
        self.parse_failures = 0
        self.scored = 0

    @torch.no_grad()
    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        queries = [rubric(p, r) for p, r in zip(prompts, responses)]
        rollouts = text_rollouts(self.tokenizer, queries, [VERDICT_PREFIX] * len(queries), add_eos=False)
        out = []
        for i in range(0, len(rollouts), self.batch_size):
            chunk = rollouts[i : i + self.batch_size]
            ids, attn, _ = pad_rollouts(chunk)
            logits = self.model(input_ids=ids, attention_mask=attn).logits
            last = attn.sum(1) - 1  # the position after '{"score":'
            scores, ok = expected_score(logits[torch.arange(len(chunk)), last].float().softmax(-1)[:, self.digit_ids])
            self.parse_failures += int((~ok).sum())
            out.extend(scores.tolist())
        self.scored += len(rollouts)
        return out

    @torch.no_grad()
    def generate_verdicts(self, prompts: list[str], responses: list[str], max_tokens: int = 16) -> list[dict | None]:
        """Greedy one-line verdicts, parsed as JSON; None where the line is not valid JSON."""
        out = []
        for p, r in zip(prompts, responses):
            ids = torch.tensor([self.tokenizer(rubric(p, r), add_special_tokens=False).input_ids])
            gen = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                      max_new_tokens=max_tokens, eos_token_id=self.tokenizer.eos_token_id,
                                      pad_token_id=self.tokenizer.pad_token_id)
            line = self.tokenizer.decode(gen[0, ids.shape[1]:], skip_special_tokens=True).strip()
            try:
                v = json.loads(line)
                out.append(v if isinstance(v, dict) and "score" in v else None)
            except json.JSONDecodeError:
                out.append(None)
        return out
