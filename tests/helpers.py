"""Helpers shared by tests (import these, never conftest: importing conftest runs it twice)."""
import random
import string

import torch

from policies.tiny import random_model

ANSWER_LEN = 8


def train_echo_model(path, steps: int = 200, seed: int = 0):
    """A tiny Qwen2 taught one habit: after "Q:<digits>=" it writes 8 random lowercase letters and EOS.

    So greedy decoding is deterministic, sampling at temperature 1 is diverse, and every sample
    stops with EOS after exactly 9 tokens: what the engine tests need from a model.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    random_model(path, "tiny", seed)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        texts = [f"Q:{rng.randint(0, 999):03d}=" + "".join(rng.choices(string.ascii_lowercase, k=ANSWER_LEN))
                 for _ in range(32)]
        ids = torch.tensor([tok(t).input_ids + [tok.eos_token_id] for t in texts])
        labels = ids.clone()
        labels[:, :6] = -100  # learn the answer and the EOS, not the prompt
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(path, safe_serialization=True)
    return path
