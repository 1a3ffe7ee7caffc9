"""The smol world: its arithmetic task (light) and SmolLM2-135M-Instruct converted from the wheel's
GGUF (heavy: loads a 135M model; run under `flock /tmp/heavy.lock`)."""
import re

import pytest
from omegaconf import OmegaConf

from rl.cluster import shutdown_ray
from worlds.smol.task import PHRASINGS, SmolArithTask, make

ASKED = re.compile(r"(\d+) (?:\+|-|\*|plus|minus|times) (\d+)")


def task(**kw):
    cfg = {"max_operand": 9, "ops": ["+", "-"], "fewshot": 3, "instruction": "Give the answer as a number after ####."} | kw
    return make(OmegaConf.create(cfg))


def test_items_are_the_questions_they_ask_with_their_answers():
    t = task()
    items = t.items("train", 60, seed=1, distinct=False)
    assert items == t.items("train", 60, seed=1, distinct=False)  # replayable
    for it in items:
        *shots, ask = it.prompt
        assert [m["role"] for m in shots] == ["user", "assistant"] * 3 and ask["role"] == "user"
        assert ask["content"].endswith("\nGive the answer as a number after ####.")
        a, b = map(int, ASKED.search(it.meta["question"]).groups())
        assert it.answer == str(a + b if it.kind == "+" else a - b)
        assert it.text == ask["content"]
    for shot in (items[0].prompt[2 * i : 2 * i + 2] for i in range(3)):  # the examples answer right, tagged
        a, b = map(int, ASKED.search(shot[0]["content"]).groups())
        op = re.search(r"\d+ (\+|-) \d+ =", shot[1]["content"]).group(1)
        assert shot[1]["content"].endswith(f"#### {a + b if op == '+' else a - b}")
    assert {it.kind for it in items} == {"+", "-"}


def test_splits_are_disjoint_and_cover_every_problem():
    t = SmolArithTask(9, ["+"], 0, "")
    sizes = {s: len(t.pools[s]) for s in t.pools}
    assert sum(sizes.values()) == 10 * 10 * len(PHRASINGS)
    questions = {s: {q for q, *_ in t.pools[s]} for s in t.pools}
    assert not (questions["train"] & questions["eval"]) and not (questions["train"] & questions["bench"])
    assert not (questions["eval"] & questions["bench"])
    assert sizes["train"] > 0.7 * sum(sizes.values()) and sizes["eval"] > 20
    shots = [m["content"] for m in task(ops=["+"]).items("eval", 1, 0)[0].prompt[:-1] if m["role"] == "user"]
    assert all(s.split("\n")[0] in questions["train"] for s in shots)  # examples come from train


def test_bad_task_settings_are_named():
    with pytest.raises(ValueError, match=r"task.ops=\['/'\]"):
        task(ops=["/"])
    with pytest.raises(ValueError, match="task.max_operand"):
        task(max_operand=0)


def test_the_verifier_reads_the_tagged_answer_only():
    from rewards import make_source, resolve

    t = task(fewshot=0)
    items = t.items("eval", 3, 0)
    verifier = make_source(resolve(OmegaConf.create({"type": "rule"}), t))
    right = [f"So it is\n#### {it.answer}" for it in items]
    untagged = [f"The answer is {it.answer}." for it in items]
    wrong = [f"#### {int(it.answer) + 1}" for it in items]
    prompts = [it.text for it in items]
    assert verifier.score(prompts, right, items=items) == [1.0] * 3
    assert verifier.score(prompts, untagged, items=items) == [0.0] * 3
    assert verifier.score(prompts, wrong, items=items) == [0.0] * 3


@pytest.fixture(scope="module")
def smol_base():
    from worlds import zoo

    world = zoo.world_config("smol")
    return world, zoo.ensure(world, zoo.default_cache_dir(), ["base"]) / "base"


def test_the_converted_model_gives_the_ggufs_log_probs_in_hf_and_vllm(smol_base):
    """The HF directory the zoo writes, loaded by plain transformers and served by vLLM, gives the
    log-probs the GGUF-loaded model gives (loaded here on its own) on the same tokens."""
    import json

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from policies.engine import Sampling
    from policies.vllm_engine import VLLMEngine
    from worlds.smol.zoo import gguf_file

    world, path = smol_base
    conv = json.loads((path / "conversion.json").read_text())
    assert conv["max_abs_logprob_gap"] <= 1e-4 and 134e6 < conv["params"] < 136e6
    gguf = gguf_file(world)
    ref = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    assert tok.chat_template and json.loads((path / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    copy = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True).eval()
    prompt = [{"role": "user", "content": "What is 3 plus 4?\nGive the answer as a number after ####."}]
    engine = VLLMEngine(str(path), max_model_len=512)
    [r] = engine.generate([prompt], Sampling(n=1, temperature=1.0, max_tokens=12, seed=3))
    ids = torch.tensor([r.prompt_ids + r.completion_ids])
    with torch.no_grad():
        logp = {name: m(input_ids=ids).logits[0, :-1].log_softmax(-1).gather(-1, ids[0, 1:, None]).squeeze(-1)
                for name, m in (("gguf", ref), ("copy", copy))}
    n = len(r.completion_ids)
    assert torch.allclose(logp["gguf"], logp["copy"], atol=1e-4)
    gap = (torch.tensor(r.logprobs) - logp["gguf"][-n:]).abs()
    assert gap.mean() < 1e-3, gap

    # Few-shot prompts share a prefix longer than a KV block (128 tokens on CPU), which vLLM caches;
    # the cached keys and values are the old weights': after a sync they must not be reused.
    from policies.logprobs import check_logprobs

    prompts = [it.engine_prompt for it in task().items("eval", 3, 0)]
    from policies.engine import encode_prompts

    assert min(len(p) for p in encode_prompts(engine.tokenizer, prompts)) > 160
    engine.generate(prompts, Sampling(n=1, temperature=0.0, max_tokens=8))  # fills the prefix cache
    with torch.no_grad():
        for p in copy.model.layers[0].parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    engine.load_weights(copy.state_dict())
    after = engine.generate(prompts, Sampling(n=1, temperature=1.0, max_tokens=8, seed=1))
    assert check_logprobs(copy, after)["mean"] < 1e-3

    # The engine decodes each sequence once after sampling; vLLM's own text is decoded token by
    # token while it samples. The same seeds sample the same tokens: the texts must be the same.
    from vllm import SamplingParams

    ours = engine.generate(prompts, Sampling(n=4, temperature=1.0, max_tokens=24, seed=7))
    outs = engine.llm.generate([{"prompt_token_ids": p} for p in encode_prompts(engine.tokenizer, prompts)],
                               [SamplingParams(n=4, max_tokens=24, seed=7 + 4 * i) for i in range(3)], use_tqdm=False)
    theirs = [o for out in outs for o in sorted(out.outputs, key=lambda o: o.index)]
    assert [r.completion_ids for r in ours] == [list(o.token_ids) for o in theirs]
    # except where max_tokens cut a multi-byte character: vLLM holds that last token's text back, a
    # decode of all the tokens (ours, the HF engine's) ends in U+FFFD
    for r, o in zip(ours, theirs):
        cut = r.finish_reason == "length" and r.text.startswith(o.text) and "\ufffd" in r.text[len(o.text):]
        assert r.text == o.text or cut, (r.text, o.text)
    assert sum(r.text == o.text for r, o in zip(ours, theirs)) >= 8
    assert sum(" " in r.text for r in ours) >= 6  # BPE words with their leading spaces, not one token


def test_two_grpo_steps_on_smollm2(tmp_path, smol_base):
    """The loop on the real model: each step's engine log-probs match the learner's after the sync
    (the loop raises otherwise), and the gold of every evaluation sample is the tagged answer's
    correctness, read here by a regex."""
    import json

    from rl.loop import run
    from tests.test_loop import config

    try:
        summary = run(config("task=smol_arith", "policy=smollm2_135m", "reward=rule", "algo.steps=2",
                             "algo.prompts_per_step=1", "algo.samples_per_prompt=4", "algo.max_tokens=32", "algo.lr=2e-6",
                             "eval.prompts=6", "eval.every=2", "checkpoint.every=0"), str(tmp_path))
    finally:
        shutdown_ray()
    assert summary["steps"] == 2 and summary["policy"] == str(smol_base[1])
    metrics = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "sync/logprob_diff" in m] == [1, 2]  # after each sync
    rows = [json.loads(x) for step in (0, 2) for x in (tmp_path / "samples" / f"step_{step:06d}.jsonl").read_text().splitlines()]
    assert len(rows) == 12
    for r in rows:
        tags = re.findall(r"####\s*(-?\d+)", r["response"])
        assert r["gold"] == float(bool(tags) and tags[-1] == r["answer"]), r
