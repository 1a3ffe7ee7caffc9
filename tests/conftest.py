import os
import random
import shutil
import string
import tempfile

import pytest
import torch

from policies.tiny import random_model
from policies.zoo import default_cache_dir

# The full arith zoo is costly (minutes): tests that need it reuse the user's cache. Everything
# else the suite builds (random models, the reduced zoo) goes to a throw-away cache that
# subprocesses (rl.run, the zoo CLI) inherit through the environment.
USER_CACHE = default_cache_dir()
TEST_CACHE = tempfile.mkdtemp(prefix="rlhf-testbed-tests-")
os.environ["RLHF_TESTBED_CACHE"] = TEST_CACHE


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(TEST_CACHE, ignore_errors=True)

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


@pytest.fixture(scope="session")
def echo_model(tmp_path_factory):
    return str(train_echo_model(tmp_path_factory.mktemp("echo") / "model"))
