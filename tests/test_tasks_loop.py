"""The loop on tasks other than the arith world's: a local model on GSM8K with the math verifier as
gold and proxy (nothing of the arith zoo built), and a prompts file with reward models as gold and proxy."""
import gzip
import json
from pathlib import Path

import pytest

from rl.cluster import shutdown_ray
from rl.loop import run
from tests.test_loop import config, refused

DATA = Path(__file__).resolve().parent.parent / "data" / "real"


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    yield
    shutdown_ray()


def gsm8k_rows(split: str) -> list[dict]:
    with gzip.open(DATA / "gsm8k" / f"{split}.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def bpe_model(tmp_path_factory):
    """A tiny random Qwen2 with a real byte-level BPE tokenizer (trained here on GSM8K questions,
    1,000 tokens) and a ChatML chat template: nothing learns, every piece of plumbing runs."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from policies.tiny import CHAT_TEMPLATE, EOS, IM_END, IM_START, PAD, UNK, random_model

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=[PAD, EOS, UNK, IM_START, IM_END],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([r["question"] for r in gsm8k_rows("train")[:2000]], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK,
                                   chat_template=CHAT_TEMPLATE, model_max_length=4096)
    return str(random_model(tmp_path_factory.mktemp("bpe") / "model", "micro", seed=0, tokenizer=fast))


def test_gsm8k_on_a_local_model_builds_no_zoo(bpe_model, tmp_path):
    """task=gsm8k policy=path reward=rule: chat prompts rendered by the model's template, the math
    verifier against GSM8K's '####' answers as proxy and gold, and an empty cache afterwards."""
    cache = tmp_path / "cache"
    summary = run(config("task=gsm8k", "policy=path", f"policy.path={bpe_model}", "reward=rule", "algo.steps=2",
                         "algo.prompts_per_step=2", "algo.samples_per_prompt=2", "algo.max_tokens=12",
                         "eval.prompts=4", "eval.every=1", "checkpoint.every=0", f"cache_dir={cache}"),
                  str(tmp_path / "run"))
    assert summary["task"] == "gsm8k" and summary["gold"] == "gold" and summary["steps"] == 2
    assert not (cache / "zoo").exists()  # nothing of the arith world was built
    answers = {r["question"]: r["answer"].split("####")[-1].strip() for r in gsm8k_rows("test")}
    rows = [json.loads(x) for x in (tmp_path / "run" / "samples" / "step_000002.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    for r in rows:
        question = next(q for q in answers if q in r["prompt"])  # the prompt is the question + an instruction
        assert r["answer"] == answers[question]
        assert r["proxy"] == r["gold"] == 0.0  # 12 random tokens do not state the answer
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 1, 2] and "reward/no_answer" in metrics[1]


def test_prompts_file_with_reward_models_as_gold_and_proxy(tmp_path, user_cache):
    """task=prompts on a JSONL file, gold=rm (the zoo's rm_l) and reward=rm (rm_s): Gao et al.'s
    synthetic-gold set-up as one config. Every saved eval sample's gold is rm_l's score of it."""
    from worlds import zoo
    from rewards.rm import RewardModel

    cfg = config(f"cache_dir={user_cache}")
    zoo_dir = zoo.ensure(cfg.world, user_cache)
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q:{a:02d}+{b:02d}="}) + "\n" for a in range(12) for b in range(12)))
    run(config("task=prompts", f"task.path={data}", "task.format=plain", "gold=rm", f"gold.path={zoo_dir / 'rm_l'}", "reward=rm_s",
               f"reward.path={zoo_dir / 'rm_s'}", "algo.steps=1", "algo.prompts_per_step=4", "algo.samples_per_prompt=4",
               "eval.prompts=6", "eval.every=1", "checkpoint.every=0", f"cache_dir={user_cache}"), str(tmp_path / "run"))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["task"] == "prompts" and summary["gold"] == "gold_rm" and summary["reward"] == "rm_s"
    rows = [json.loads(x) for x in (tmp_path / "run" / "samples" / "step_000001.jsonl").read_text().splitlines()]
    rm_l = RewardModel(str(zoo_dir / "rm_l"))
    expected = rm_l.score([r["prompt"] for r in rows], [r["response"] for r in rows])
    assert [r["gold"] for r in rows] == pytest.approx(expected, abs=1e-5)
    assert [r["proxy"] for r in rows] != pytest.approx(expected, abs=1e-3)  # the proxy is another model


@pytest.mark.parametrize("args, message", [
    (["task.name=nope"], "unknown task 'nope' (config key task.name)"),
    (["gold=rm"], "gold 'gold_rm': set gold.path (a local model directory) or gold.artifact"),
    (["gold=rm", "gold.path=/no/rm"], "model path '/no/rm' (config key gold.path) does not exist"),
])
def test_bad_task_or_gold_config_is_one_clear_error(args, message, tmp_path):
    refused(tmp_path, args, message)
