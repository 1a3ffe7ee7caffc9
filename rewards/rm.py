"""A Bradley-Terry reward model: any HF sequence-classification model with one output."""
from __future__ import annotations

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


class RewardModel:
    def __init__(self, path: str, name: str = "rm", batch_size: int = 64, template: str = "plain",
                 trust_remote_code: bool = False):
        if template not in ("plain", "chat"):
            raise ValueError(f"reward model template {template!r}: expected 'plain' or 'chat'")
        self.name, self.batch_size, self.template = name, batch_size, template
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, use_safetensors=True, trust_remote_code=trust_remote_code).eval()
        if self.model.config.num_labels != 1:
            raise ValueError(f"reward model {path!r} has num_labels={self.model.config.num_labels}; expected 1")

    def texts(self, prompts: list[str], responses: list[str]) -> list[str]:
        # TRL's RewardTrainer trains on prompt + response + EOS (or the chat template): score the same way.
        if self.template == "chat":
            return [self.tokenizer.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": r}],
                                                       tokenize=False) for p, r in zip(prompts, responses)]
        return [p + r + self.tokenizer.eos_token for p, r in zip(prompts, responses)]

    @torch.no_grad()
    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        texts = self.texts(prompts, responses)
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[i : i + self.batch_size], return_tensors="pt", padding=True,
                                 add_special_tokens=False)
            out.extend(self.model(**enc).logits[:, 0].float().tolist())
        return out
