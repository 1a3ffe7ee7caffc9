"""The plug-and-play LLM judge (Agnihotri & Pandey, arXiv 2506.05748; METHODS.md §5): a frozen
instruct LM, a one-line JSON rubric as its system prompt, k in-context demonstrations and, optionally,
a small LoRA adapter.

It is read without sampling. Pointwise (`score`, the reward): the expected digit after '{"score":'
(0-9), scaled to [0, 1]. Pairwise (`compare`, the static harness's judge protocols): "A" or "B",
whichever letter gets more probability after '{"better":"'. A verdict whose allowed tokens get under
half of the probability is a parse failure, counted: it scores 0 (pointwise) or None (pairwise).

The system prompt and the demonstrations open every query identically, so their keys and values are
computed once per verdict kind and reused: a query costs its own tokens only.
"""
from __future__ import annotations

import copy
import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rewards.judge import expected_score

CRITERIA = "correctness, safety, reasoning, factuality and clarity"
RUBRICS = {
    "point": ("You are a reward model. Rate the assistant's response to the user's message for " + CRITERIA + ". "
              'Reply with one line of JSON only: {"score":N}, N from 0 (worst) to 9 (best).'),
    "pair": ("You are a reward model. Two assistant responses, A and B, answer the same user message. Judge "
             "which is better for " + CRITERIA + '. Reply with one line of JSON only: {"better":"A"} or {"better":"B"}.'),
}
PREFIX = {"point": '{"score":', "pair": '{"better":"'}
DEMO_SCORES = (8, 2)  # what a pointwise demonstration shows for a pair's chosen and rejected response


def point_query(prompt: str, response: str) -> str:
    return f"User message:\n{prompt}\n\nAssistant response:\n{response}"


def pair_query(prompt: str, a: str, b: str) -> str:
    return f"User message:\n{prompt}\n\nResponse A:\n{a}\n\nResponse B:\n{b}"


def verdict(kind: str, value) -> str:
    return json.dumps({"score": int(value)} if kind == "point" else {"better": value}, separators=(",", ":"))


def demo_turns(kind: str, demos: list[dict]) -> list[dict]:
    """Chat turns showing each demonstration pair judged: pointwise, the i-th demo shows its chosen
    response (even i) or its rejected one (odd i) with DEMO_SCORES; pairwise, the chosen response
    is A for even i and B for odd i."""
    turns = []
    for i, d in enumerate(demos):
        if kind == "point":
            text, value = (d["chosen"], DEMO_SCORES[0]) if i % 2 == 0 else (d["rejected"], DEMO_SCORES[1])
            query = point_query(d["prompt"], text)
        else:
            a, b, value = (d["chosen"], d["rejected"], "A") if i % 2 == 0 else (d["rejected"], d["chosen"], "B")
            query = pair_query(d["prompt"], a, b)
        turns += [{"role": "user", "content": query}, {"role": "assistant", "content": verdict(kind, value)}]
    return turns


def cut(text: str, cap: int | None, keep_end: bool = False) -> str:
    if cap is None or len(text) <= cap:
        return text
    return text[-cap:] if keep_end else text[:cap]


class PnPJudge:
    def __init__(self, base_path: str, adapter_path: str | None = None, demos: list[dict] | None = None,
                 shots: int = 0, name: str = "pnp_judge", batch_size: int = 8, max_prompt_chars: int | None = 1000,
                 max_response_chars: int | None = 600):
        demos = list(demos or [])
        if shots > len(demos):
            raise ValueError(f"judge {name!r}: shots={shots} but only {len(demos)} demonstrations were given")
        self.name, self.batch_size = name, batch_size
        self.caps = (max_prompt_chars, max_response_chars)
        self.tokenizer = AutoTokenizer.from_pretrained(base_path)
        model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32, use_safetensors=True)
        if adapter_path:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter_path)
        self.model = model.eval()
        self.demos = [{k: cut(d[k], self.caps[k != "prompt"], k == "prompt") for k in ("prompt", "chosen", "rejected")}
                      for d in demos[:shots]]
        tok = self.tokenizer
        self.allowed = {"point": self._single_tokens([str(k) for k in range(10)]), "pair": self._single_tokens(["A", "B"])}
        self._prefix = {}  # kind -> (prefix token ids, their cache)
        self.parse_failures = {"point": 0, "pair": 0}
        self.scored = {"point": 0, "pair": 0}
        self.cut = 0
        if not getattr(tok, "chat_template", None):
            raise ValueError(f"judge {name!r}: the model at {base_path} has no chat template (an instruct model is needed)")

    def _single_tokens(self, words: list[str]) -> torch.Tensor:
        ids = [self.tokenizer(w, add_special_tokens=False).input_ids for w in words]
        if any(len(i) != 1 for i in ids):
            raise ValueError(f"judge {self.name!r}: its tokenizer splits one of {words} into several tokens")
        return torch.tensor([i[0] for i in ids])

    def _cut(self, text: str, what: str) -> str:
        out = cut(text, self.caps[what != "prompt"], what == "prompt")
        self.cut += out != text
        return out

    def texts(self, kind: str, queries: list[str]) -> tuple[str, list[str]]:
        """The shared opening (system rubric + demonstrations) and each query's continuation, which
        ends with the verdict's opening; opening + continuation is the full chat text."""
        head = [{"role": "system", "content": RUBRICS[kind]}] + demo_turns(kind, self.demos)
        opening = self.tokenizer.apply_chat_template(head, tokenize=False)
        out = []
        for q in queries:
            full = self.tokenizer.apply_chat_template(head + [{"role": "user", "content": q}], tokenize=False,
                                                      add_generation_prompt=True)
            if not full.startswith(opening):
                raise ValueError(f"judge {self.name!r}: the chat template does not render the opening turns as a prefix")
            out.append(full[len(opening):] + PREFIX[kind])
        return opening, out

    @torch.no_grad()
    def _opening(self, kind: str, opening: str):
        if kind not in self._prefix:
            ids = torch.tensor([self.tokenizer(opening, add_special_tokens=False).input_ids])
            self._prefix[kind] = (ids, self.model(input_ids=ids, use_cache=True).past_key_values)
        return self._prefix[kind]

    @torch.no_grad()
    def next_token_probs(self, kind: str, queries: list[str]) -> torch.Tensor:
        """[len(queries), allowed tokens]: the probabilities of the verdict's allowed tokens."""
        opening, rest = self.texts(kind, queries)
        ids0, cache0 = self._opening(kind, opening)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        out = []
        for i in range(0, len(rest), self.batch_size):
            enc = [self.tokenizer(t, add_special_tokens=False).input_ids for t in rest[i : i + self.batch_size]]
            width = max(map(len, enc))
            ids = torch.tensor([e + [pad] * (width - len(e)) for e in enc])
            mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in enc])
            cache = copy.deepcopy(cache0)
            cache.batch_repeat_interleave(len(enc))
            attn = torch.cat([torch.ones(len(enc), ids0.shape[1], dtype=mask.dtype), mask], 1)
            logits = self.model(input_ids=ids, attention_mask=attn, past_key_values=cache, use_cache=True).logits
            last = logits[torch.arange(len(enc)), mask.sum(1) - 1].float().softmax(-1)
            out.append(last[:, self.allowed[kind]])
        return torch.cat(out) if out else torch.zeros(0, len(self.allowed[kind]))

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        probs = self.next_token_probs("point", [point_query(self._cut(p, "prompt"), self._cut(r, "response"))
                                                for p, r in zip(prompts, responses)])
        scores, ok = expected_score(probs)
        self.parse_failures["point"] += int((~ok).sum())
        self.scored["point"] += len(prompts)
        return scores.tolist()

    def compare(self, prompts: list[str], first: list[str], second: list[str]) -> list[str | None]:
        probs = self.next_token_probs("pair", [pair_query(self._cut(p, "prompt"), self._cut(a, "response"),
                                                          self._cut(b, "response")) for p, a, b in zip(prompts, first, second)])
        out = []
        for pa, pb in probs.tolist():
            out.append(None if pa + pb < 0.5 or pa == pb else "A" if pa > pb else "B")
        self.parse_failures["pair"] += sum(v is None for v in out)
        self.scored["pair"] += len(out)
        return out
