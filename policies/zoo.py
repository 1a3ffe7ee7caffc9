"""The arith world's model zoo, built locally on CPU and cached by content hash.

    python -m policies.zoo build [--world arith|arith_small] [key=value ...]
    python -m policies.zoo info  [--world ...] [--json]

Everything is trained here from scratch, deterministically: a character tokenizer and a tiny
Qwen2 base policy (TRL SFT), graded Bradley-Terry proxy RMs (TRL RewardTrainer), a LoRA judge
(TRL SFT + PEFT), a CDR pair (strong = base SFT on gold-chosen answers, weak = base) and static
benchmarks in RewardBench v1/v2 schemas. The cache key hashes the world config and the source
of every module the build runs, so a change to either rebuilds.
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONF = Path(__file__).resolve().parent.parent / "conf"
RM_NAMES_KEY = "rms"


def world_config(name: str = "arith", overrides: list[str] | None = None) -> DictConfig:
    """The `world` group of the Hydra tree, composed as `python -m rl.run world=NAME` would."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"world={name}"] + [f"world.{o}" for o in overrides or []])
    return cfg.world


def default_cache_dir() -> str:
    return os.environ.get("RLHF_TESTBED_CACHE", os.path.expanduser("~/.cache/rlhf-testbed"))


def zoo_key(world: DictConfig) -> str:
    import policies.logprobs
    import policies.tiny
    import rewards.cdr
    import rewards.gold
    import rewards.judge
    import rewards.rm
    import rl.tasks.arith

    h = hashlib.sha256(OmegaConf.to_yaml(world, resolve=True).encode())
    for mod in (sys.modules[__name__], policies.tiny, policies.logprobs, rl.tasks.arith, rewards.gold,
                rewards.rm, rewards.judge, rewards.cdr):
        h.update(inspect.getsource(mod).encode())
    return h.hexdigest()[:12]


def zoo_dir(world: DictConfig, cache_dir: str | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / "zoo" / f"{world.name}-{zoo_key(world)}"


def ensure(world: DictConfig, cache_dir: str | None = None) -> Path:
    """The zoo directory for `world`, built first if it is not in the cache (first need)."""
    target = zoo_dir(world, cache_dir)
    if not (target / "info.json").is_file():
        build(world, target)
    return target


# ------------------------------------------------------------------------------------ training


def _trainer_args(out: Path, steps: int, batch_size: int, lr: float, seed: int) -> dict:
    return dict(output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=lr,
                lr_scheduler_type="constant", warmup_steps=0, logging_steps=max(1, steps // 4), report_to=[],
                save_strategy="no", use_cpu=True, bf16=False, gradient_checkpointing=False, seed=seed,
                data_seed=seed, dataloader_num_workers=0, disable_tqdm=False)


def _sft(model, tok, rows: list[dict], out: Path, steps: int, world, peft_config=None):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(**_trainer_args(out / "_trainer", steps, world.batch_size, world.lr, world.seed), max_length=96)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=peft_config)
    trainer.train()
    trainer.save_model(str(out))
    tok.save_pretrained(out)
    shutil.rmtree(out / "_trainer", ignore_errors=True)
    return trainer.model


def _reward_model(base: Path, rows: list[dict], out: Path, epochs: int, world) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    steps = max(1, epochs * len(rows) // world.rm_batch_size)
    args = RewardConfig(**_trainer_args(out / "_trainer", steps, world.rm_batch_size, world.rm_lr, world.seed),
                        max_length=96)
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    trainer.train()
    trainer.save_model(str(out))
    tok.save_pretrained(out)
    shutil.rmtree(out / "_trainer", ignore_errors=True)


def judge_rows(world, n: int) -> list[dict]:
    """Rubric prompts over responses of every quality; the label is 9 x gold, plus the raters'
    verbosity bias (`judge.filler_bonus` when filler is present), clipped to 0..9."""
    from rewards.gold import gold_reward
    from rewards.judge import rubric, verdict
    from rl.tasks.arith import core_of, open_answer, sample_items, with_attributes, wrong_answer

    rng = random.Random(f"judge-{world.seed}")
    rows = []
    for it in sample_items("train", n, world.seed + 3, world.open_frac, distinct=False):
        if it.kind == "add":
            core = it.answer if rng.random() < 0.5 else wrong_answer(it, rng)
        else:
            core = open_answer(it, rng, rng.randint(0, 4))
        filler = rng.choice([0, 0, 1, 2])
        response = with_attributes(core, filler, rng.random() < 0.2, rng.random() < world.preference.hedge_prob)
        label = min(9, round(9 * gold_reward(it.prompt, core_of(response))) + (world.judge.filler_bonus if filler else 0))
        rows.append({"prompt": rubric(it.prompt, response), "completion": verdict(label)})
    return rows


# ----------------------------------------------------------------------------------- evaluating


def base_accuracy(path: Path, world) -> dict:
    """Mean gold of the base policy's T=1 samples on eval prompts, overall and per kind."""
    from policies.engine import Sampling
    from policies.hf_engine import HFEngine
    from rewards.gold import gold_reward
    from rl.tasks.arith import sample_items

    items = sample_items("eval", world.eval_prompts, world.seed, world.open_frac)
    rs = HFEngine(str(path)).generate([i.prompt for i in items], Sampling(n=1, temperature=1.0, max_tokens=24,
                                                                          seed=world.seed))
    gold = [(items[r.prompt_index].kind, gold_reward(items[r.prompt_index].prompt, r.text)) for r in rs]
    mean = lambda kind: sum(g for k, g in gold if kind in (k, None)) / max(1, sum(kind in (k, None) for k, _ in gold))  # noqa: E731
    return {"overall": mean(None), "add": mean("add"), "open": mean("open"),
            "truncated": sum(r.finish_reason == "length" for r in rs)}


def reward_sources(zoo: Path, world) -> dict:
    """Every reward source the zoo provides, by name (the names `info` reports)."""
    from rewards.cdr import CDR
    from rewards.gold import Gold
    from rewards.judge import LoRAJudge
    from rewards.rm import RewardModel

    out = {"gold": Gold()}
    out.update({name: RewardModel(str(zoo / name), name) for name in world.rms})
    out["judge"] = LoRAJudge(str(zoo / "base"), str(zoo / "judge"))
    out["cdr"] = CDR(str(zoo / "cdr_strong"), str(zoo / "base"), length_norm=world.cdr.length_norm)
    return out


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


# ------------------------------------------------------------------------------------- building


def build(world: DictConfig, target: Path) -> Path:
    """Build the whole zoo into a temporary directory, then rename it to `target` (atomic)."""
    import torch
    from peft import LoraConfig
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from analysis.rewardbench import score_v1, score_v2
    from policies.tiny import random_model
    from rl.tasks import arith

    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    logging.getLogger("datasets").setLevel(logging.ERROR)
    torch.manual_seed(world.seed)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".building-{target.name}-"))
    t0, timings = time.time(), {}
    stages = ["base", *world.rms, "judge", "cdr_strong", "benchmarks", "static accuracy"]
    bar = tqdm(stages, desc="zoo", unit="stage", file=sys.stdout)

    def stage(name):
        bar.set_description(f"zoo: {name}")
        timings[name] = time.time()

    def done(name):
        timings[name] = round(time.time() - timings[name], 1)
        bar.update(1)

    try:
        (tmp / "data").mkdir()
        stage("base")
        random_model(tmp / "init", world.model.shape, world.seed, max_position_embeddings=world.model.max_position_embeddings)
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(tmp / "init")
        sft = arith.sft_rows(world.base.steps * world.batch_size, world.seed, world.open_frac,
                             world.base.filler_prob, world.base.polite_prob, hedge_prob=world.base.hedge_prob)
        model = AutoModelForCausalLM.from_pretrained(tmp / "init", dtype=torch.float32)
        _sft(model, tok, sft, tmp / "base", world.base.steps, world)
        shutil.rmtree(tmp / "init")
        base_acc = base_accuracy(tmp / "base", world)
        done("base")

        pcfg = world.preference
        for name, rm in world.rms.items():
            stage(name)
            rows = arith.preference_pairs(rm.pairs, world.seed, world.open_frac, rm.rho, rm.noise,
                                          pcfg.filler_max, pcfg.polite_prob, hedge_prob=pcfg.hedge_prob)
            write_jsonl(tmp / "data" / f"pref_{name}.jsonl", rows)
            _reward_model(tmp / "base", rows, tmp / name, rm.epochs, world)
            done(name)

        stage("judge")
        model = AutoModelForCausalLM.from_pretrained(tmp / "base", dtype=torch.float32)
        lora = LoraConfig(r=world.judge.lora_r, lora_alpha=world.judge.lora_alpha, lora_dropout=0.0,
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                          task_type="CAUSAL_LM")
        _sft(model, tok, judge_rows(world, world.judge.steps * world.batch_size), tmp / "judge", world.judge.steps,
             world, peft_config=lora)
        done("judge")

        stage("cdr_strong")
        pairs = arith.preference_pairs(world.cdr.steps * world.batch_size, world.seed + 5, world.open_frac,
                                       world.cdr.rho, 0.0, pcfg.filler_max, pcfg.polite_prob,
                                       hedge_prob=pcfg.hedge_prob)
        model = AutoModelForCausalLM.from_pretrained(tmp / "base", dtype=torch.float32)
        _sft(model, tok, [{"prompt": p["prompt"], "completion": p["chosen"]} for p in pairs], tmp / "cdr_strong",
             world.cdr.steps, world)
        done("cdr_strong")

        stage("benchmarks")
        v1 = arith.bench_v1(world.bench.v1_per_subset, world.seed)
        v2 = arith.bench_v2(world.bench.v2_per_subset, world.bench.ties_prompts, world.seed)
        write_jsonl(tmp / "data" / "bench_v1.jsonl", v1)
        write_jsonl(tmp / "data" / "bench_v2.jsonl", v2)
        done("benchmarks")

        stage("static accuracy")
        sources = reward_sources(tmp, world)
        static = {name: {"v1": score_v1(src, v1), "v2": score_v2(src, v2)} for name, src in sources.items()}
        done("static accuracy")
        bar.close()

        info = {"world": world.name, "key": target.name, "build_s": round(time.time() - t0, 1), "stage_s": timings,
                "base_gold_accuracy": base_acc["overall"], "base": base_acc,
                "static_accuracy": {n: s["v1"]["overall"] for n, s in static.items()},
                "static_accuracy_v2": {n: s["v2"]["overall"] for n, s in static.items()},
                "static": static, "judge_parse_failures": sources["judge"].parse_failures,
                "config": OmegaConf.to_container(world, resolve=True)}
        (tmp / "info.json").write_text(json.dumps(info, indent=2))  # written last: marks a complete build
        if target.exists():  # another process finished first; keep its (identical) build
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ------------------------------------------------------------------------------------------ CLI


def format_info(info: dict) -> str:
    lines = [f"zoo {info['key']} (world {info['world']}), built in {info['build_s']}s",
             f"base policy gold at T=1: {info['base_gold_accuracy']:.3f} "
             f"(add accuracy {info['base']['add']:.3f}, open quality {info['base']['open']:.3f})",
             f"{'source':<12}{'v1 (pairs)':>12}{'v2 (best-of-4, Ties)':>24}"]
    for name, s in info["static"].items():
        lines.append(f"{name:<12}{s['v1']['overall']:>12.3f}{s['v2']['overall']:>24.3f}")
    lines.append("v1 per subset:")
    subsets = list(next(iter(info["static"].values()))["v1"])
    lines.append(f"{'':<12}" + "".join(f"{s[:20]:>22}" for s in subsets))
    for name, s in info["static"].items():
        lines.append(f"{name:<12}" + "".join(f"{s['v1'][k]:>22.3f}" for k in subsets))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m policies.zoo", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["build", "info", "path"])
    ap.add_argument("--world", default="arith", help="a config under conf/world/")
    ap.add_argument("--cache-dir", default=None, help="default: $RLHF_TESTBED_CACHE or ~/.cache/rlhf-testbed")
    ap.add_argument("--json", action="store_true", help="info: one JSON object")
    ap.add_argument("overrides", nargs="*", help="world config overrides, e.g. base.steps=300")
    a = ap.parse_args(argv)
    world = world_config(a.world, a.overrides)
    if a.command == "build":
        path = ensure(world, a.cache_dir)
        print(format_info(json.loads((path / "info.json").read_text())))
        print(f"zoo: {path}")
    elif a.command == "path":
        print(zoo_dir(world, a.cache_dir))
    else:
        path = zoo_dir(world, a.cache_dir)
        if not (path / "info.json").is_file():
            sys.exit(f"zoo for world {a.world!r} is not built ({path}); run: python -m policies.zoo build --world {a.world}")
        info = json.loads((path / "info.json").read_text())
        print(json.dumps(info) if a.json else format_info(info))


if __name__ == "__main__":
    main()
