"""The HF transformers engine: `model.generate` behind the same contract as the vLLM engine.

Faster than vLLM for the arith world's sub-million-parameter models (fixed overheads dominate
there; see BENCHMARKS.md), and the reference the vLLM engine is tested against.
"""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from policies import shm_weights
from policies.engine import Prompt, Rollout, Sampling, check_model_dir, check_state_keys, encode_prompts

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class HFEngine:
    def __init__(self, model_path: str, dtype: str = "float32", seed: int = 0, threads: int | None = None,
                 trust_remote_code: bool = False, **_unused):
        path = check_model_dir(model_path)
        if threads:
            torch.set_num_threads(threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], use_safetensors=True,
                                                          trust_remote_code=trust_remote_code).to(self.device).eval()
        self.eos = self.model.generation_config.eos_token_id or self.tokenizer.eos_token_id
        self.eos = set(self.eos if isinstance(self.eos, list) else [self.eos])
        self.seed = seed

    @torch.no_grad()
    def generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[Rollout]:
        ids = encode_prompts(self.tokenizer, prompts)
        # Batch only prompts of equal length: no padding, so position ids match a learner's
        # forward pass exactly (left padding shifted them in an earlier probe and broke learning).
        by_len = defaultdict(list)
        for i, p in enumerate(ids):
            by_len[len(p)].append(i)
        results: dict[int, list[Rollout]] = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed if sampling.seed is None else sampling.seed)
            for idx in by_len.values():
                batch = torch.tensor([ids[i] for i in idx], device=self.device)
                for i, rs in zip(idx, self._generate_batch(batch, sampling)):
                    for r in rs:
                        r.prompt_index = i
                    results[i] = rs
        return [r for i in range(len(ids)) for r in results[i]]

    def _generate_batch(self, batch: torch.Tensor, s: Sampling) -> list[list[Rollout]]:
        sample = s.temperature > 0
        out = self.model.generate(
            batch, attention_mask=torch.ones_like(batch), do_sample=sample, max_new_tokens=s.max_tokens,
            num_return_sequences=s.n, return_dict_in_generate=True, output_logits=True,
            eos_token_id=sorted(self.eos), pad_token_id=self.tokenizer.pad_token_id,
            **(dict(temperature=s.temperature, top_p=s.top_p, top_k=0) if sample else {}),
            **(dict(stop_strings=s.stop, tokenizer=self.tokenizer) if s.stop else {}))
        P = batch.shape[1]
        gen = out.sequences[:, P:]
        logp = torch.stack(out.logits, dim=1).float().log_softmax(-1).gather(-1, gen[..., None]).squeeze(-1)
        groups = [[] for _ in range(batch.shape[0])]
        for row in range(gen.shape[0]):
            b = row // s.n
            toks, lps = gen[row].tolist(), logp[row].tolist()
            reason, end = "length", len(toks)
            for t, tok in enumerate(toks):
                if tok in self.eos:
                    reason, end = "stop", t + 1
                    break
            toks, lps = toks[:end], lps[:end]
            text = self.tokenizer.decode(toks, skip_special_tokens=True)
            cut = self._stop_cut(toks, s.stop)
            if cut is not None:
                toks, lps, reason = toks[:cut], lps[:cut], "stop"
                text = self.tokenizer.decode(toks, skip_special_tokens=True)
                text = text[: min(text.find(x) for x in s.stop if x in text)]
            groups[b].append(Rollout(0, batch[b].tolist(), toks, text, lps, reason))
        return groups

    def _stop_cut(self, toks: list[int], stop: list[str]) -> int | None:
        """Number of tokens up to and including the one that completes a stop string (as vLLM does)."""
        if not stop:
            return None
        for k in range(1, len(toks) + 1):
            if any(x in self.tokenizer.decode(toks[:k], skip_special_tokens=True) for x in stop):
                return k
        return None

    def load_weights(self, state_dict: dict | str) -> float:
        """From tensors, or from a safetensors file (`policies.engine.weights_file`)."""
        t0 = time.perf_counter()
        if isinstance(state_dict, str):
            state_dict = shm_weights.read(state_dict)
        # a tied head is the embedding's storage: a sync may leave it out
        optional = {"lm_head.weight"} if self.model.config.tie_word_embeddings else set()
        check_state_keys(set(self.model.state_dict()), set(state_dict), "the HF engine's model", optional)
        with torch.no_grad():
            self.model.load_state_dict(state_dict, strict=False)  # the keys were checked just above
        return time.perf_counter() - t0

    def close(self) -> None:
        del self.model
