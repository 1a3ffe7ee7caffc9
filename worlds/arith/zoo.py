"""The arith world's zoo recipe: what worlds/zoo.py builds for `world=arith` (and arith_small).

Everything is trained here from scratch, deterministically: a character tokenizer and a tiny
Qwen2 base policy (TRL SFT), graded Bradley-Terry proxy RMs (TRL RewardTrainer), a LoRA judge
(TRL SFT + PEFT), a CDR pair (strong = base SFT on gold-chosen answers, weak = base) and static
benchmarks in RewardBench v1/v2 schemas (artifact `data`).
"""
from __future__ import annotations

import json
import random
import shutil
from functools import partial
from pathlib import Path

# The code a build runs: the zoo's cache key hashes it, so a change to any of these rebuilds.
SOURCES = ("worlds.arith.zoo", "worlds.arith.task", "worlds.arith.gold", "policies.tiny", "policies.logprobs",
           "rewards.rm", "rewards.judge", "rewards.cdr", "rewards.ranking")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def artifacts(world) -> dict:
    """name -> (the artifacts it needs, builder(world, out_dir, zoo_dir))."""
    out = {"base": ([], build_base), "data": ([], build_data)}
    out |= {name: (["base"], partial(build_rm, name=name)) for name in world.rms}
    out["judge"] = (["base"], build_judge)
    out["cdr_strong"] = (["base"], build_cdr_strong)
    out["referee"] = (["base"], build_referee)
    return out


# ------------------------------------------------------------------------------------ training


def _trainer_args(out: Path, steps: int, batch_size: int, lr: float, seed: int) -> dict:
    return dict(output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=lr,
                lr_scheduler_type="constant", warmup_steps=0, logging_steps=max(1, steps // 4), report_to=[],
                save_strategy="no", use_cpu=True, bf16=False, gradient_checkpointing=False, seed=seed,
                data_seed=seed, dataloader_num_workers=0, disable_tqdm=False)


def _sft(model, tok, rows: list[dict], out: Path, steps: int, world, peft_config=None, callbacks=None) -> None:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(**_trainer_args(out / "_trainer", steps, world.batch_size, world.lr, world.seed), max_length=96)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=peft_config, callbacks=callbacks)
    trainer.train()
    trainer.save_model(str(out))
    tok.save_pretrained(out)
    shutil.rmtree(out / "_trainer", ignore_errors=True)


def _causal_lm(path: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)


def build_base(world, out: Path, zoo: Path) -> None:
    """SFT (TRL) of a random tiny Qwen2 on right answers with random attributes."""
    from policies.tiny import random_model
    from worlds.arith.task import sft_rows

    random_model(out / "_init", world.model.shape, world.seed, max_position_embeddings=world.model.max_position_embeddings)
    model, tok = _causal_lm(out / "_init")
    rows = sft_rows(world.base.steps * world.batch_size, world.seed, world.open_frac, world.base.filler_prob,
                    world.base.polite_prob, hedge_prob=world.base.hedge_prob)
    _sft(model, tok, rows, out, world.base.steps, world)
    shutil.rmtree(out / "_init")


def build_rm(world, out: Path, zoo: Path, name: str) -> None:
    """A Bradley-Terry proxy (TRL RewardTrainer) on the base policy; its pairs saved beside it."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from worlds.arith.task import preference_pairs

    rm, pcfg = world.rms[name], world.preference
    rows = preference_pairs(rm.pairs, world.seed, world.open_frac, rm.rho, rm.noise, pcfg.filler_max,
                            pcfg.polite_prob, hedge_prob=pcfg.hedge_prob)
    write_jsonl(out / "train_pairs.jsonl", rows)
    tok = AutoTokenizer.from_pretrained(zoo / "base")
    model = AutoModelForSequenceClassification.from_pretrained(zoo / "base", num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    steps = max(1, rm.epochs * len(rows) // world.rm_batch_size)
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
    from rewards.judge import rubric, verdict
    from worlds.arith.gold import gold_reward
    from worlds.arith.task import core_of, open_answer, sample_items, with_attributes, wrong_answer

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


def build_judge(world, out: Path, zoo: Path) -> None:
    """A LoRA adapter on the frozen base policy that writes a one-line JSON verdict."""
    from peft import LoraConfig

    model, tok = _causal_lm(zoo / "base")
    lora = LoraConfig(r=world.judge.lora_r, lora_alpha=world.judge.lora_alpha, lora_dropout=0.0,
                      target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    _sft(model, tok, judge_rows(world, world.judge.steps * world.batch_size), out, world.judge.steps, world,
         peft_config=lora)


def build_cdr_strong(world, out: Path, zoo: Path) -> None:
    """CDR's strong model: the base policy SFT'd on the chosen side of gold-labelled pairs."""
    from worlds.arith.task import preference_pairs

    pcfg = world.preference
    pairs = preference_pairs(world.cdr.steps * world.batch_size, world.seed + 5, world.open_frac, world.cdr.rho, 0.0,
                             pcfg.filler_max, pcfg.polite_prob, hedge_prob=pcfg.hedge_prob)
    model, tok = _causal_lm(zoo / "base")
    _sft(model, tok, [{"prompt": p["prompt"], "completion": p["chosen"]} for p in pairs], out, world.cdr.steps, world)


def referee_rows(world, n: int) -> list[dict]:
    """Ranking verdicts over 2..`world.referee.max_size` responses of known gold (best first; gold
    ties broken at random; URPO ranks its own groups of G samples as well as size-N preference
    lists), mixed with the base policy's own SFT rows (`1 - rank_frac`) so the player keeps playing."""
    from rewards.ranking import referee_prompt
    from worlds.arith.task import ranking_items, sft_rows

    ref, rng = world.referee, random.Random(f"referee-{world.seed}")
    n_rank = round(n * ref.rank_frac)
    rows, sizes = [], range(2, ref.max_size + 1)
    ranked = [r for size in sizes for r in ranking_items("train", n_rank // len(sizes), world.seed + 13 + size, size,
                                                         world.open_frac)]
    for r in ranked:
        order = sorted(range(len(r["candidates"])), key=lambda i: (-r["gold"][i], rng.random()))
        rows.append({"prompt": referee_prompt(r["prompt"], r["candidates"], ref.template, ref.item),
                     "completion": ">".join(str(i + 1) for i in order)})
    rows += sft_rows(n - len(rows), world.seed + 17, world.open_frac, world.base.filler_prob, world.base.polite_prob,
                     hedge_prob=world.base.hedge_prob)
    rng.shuffle(rows)
    return rows


def referee_parse_rate(model_dir: Path, world) -> float:
    """The share of greedy verdicts that parse, on `referee.check_rankings` train-split rankings of
    `referee.max_size` candidates (drawn apart from the SFT rows' seeds)."""
    from policies.engine import Sampling
    from policies.hf_engine import HFEngine
    from rewards.ranking import parse_ranking, referee_prompt
    from worlds.arith.task import ranking_items

    ref = world.referee
    rankings = ranking_items("train", ref.check_rankings, world.seed + 29, ref.max_size, world.open_frac)
    prompts = [referee_prompt(r["prompt"], r["candidates"], ref.template, ref.item) for r in rankings]
    rs = HFEngine(str(model_dir)).generate(prompts, Sampling(n=1, temperature=0.0, max_tokens=16, seed=0))
    return sum(parse_ranking(r.text, ref.max_size) is not None for r in rs) / len(rs)


def build_referee(world, out: Path, zoo: Path) -> None:
    """URPO's starting model: the base policy SFT'd a little on ranking verdicts (and its own data).

    "A little" is a property of the result, not of a step count: the same 100 steps gave a referee
    whose verdicts parse 19% of the time on one CPU and never on another (float rounding decides
    where a barely trained model's greedy output lands). So after `referee.steps` the build checks
    the parse rate every `check_every` steps and stops once it reaches `parse_target`."""
    from transformers import TrainerCallback

    ref = world.referee
    model, tok = _causal_lm(zoo / "base")
    history = []

    class ParseCheck(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            step = state.global_step
            if ref.parse_target <= 0 or step < ref.steps or (step - ref.steps) % ref.check_every:
                return
            model.save_pretrained(out / "_check")
            tok.save_pretrained(out / "_check")
            history.append({"step": step, "parse_rate": referee_parse_rate(out / "_check", world)})
            print(f"referee: step {step}, greedy parse rate {history[-1]['parse_rate']:.2f} "
                  f"(target {ref.parse_target})", flush=True)
            control.should_training_stop = history[-1]["parse_rate"] >= ref.parse_target

    most = max(ref.max_steps, ref.steps) if ref.parse_target > 0 else ref.steps  # checked at least once
    _sft(model, tok, referee_rows(world, most * world.batch_size), out, most, world, callbacks=[ParseCheck()])
    shutil.rmtree(out / "_check", ignore_errors=True)
    if ref.parse_target > 0 and history[-1]["parse_rate"] < ref.parse_target:
        print(f"warning: the referee's greedy parse rate is {history[-1]['parse_rate']:.2f} after {most} SFT steps, "
              f"below world.referee.parse_target={ref.parse_target}", flush=True)
    steps = history[-1]["step"] if history else ref.steps
    (out / "referee.json").write_text(json.dumps({"sft_steps": steps, "checks": history}))


def build_data(world, out: Path, zoo: Path) -> None:
    """The held-out static benchmarks (bench split) in RewardBench v1 / v2 schemas."""
    from worlds.arith.task import bench_v1, bench_v2

    write_jsonl(out / "bench_v1.jsonl", bench_v1(world.bench.v1_per_subset, world.seed))
    write_jsonl(out / "bench_v2.jsonl", bench_v2(world.bench.v2_per_subset, world.bench.ties_prompts, world.seed))


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


# ----------------------------------------------------------------------------------- the report


def base_accuracy(path: Path, world) -> dict:
    """Mean gold of the base policy's T=1 samples on eval prompts, overall and per kind."""
    from policies.engine import Sampling
    from policies.hf_engine import HFEngine
    from worlds.arith.gold import gold_reward
    from worlds.arith.task import sample_items

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
    from rewards.judge import LoRAJudge
    from rewards.rm import RewardModel
    from worlds.arith.gold import Gold

    out = {"gold": Gold()}
    out.update({name: RewardModel(str(zoo / name), name) for name in world.rms})
    out["judge"] = LoRAJudge(str(zoo / "base"), str(zoo / "judge"))
    out["cdr"] = CDR(str(zoo / "cdr_strong"), str(zoo / "base"), length_norm=world.cdr.length_norm)
    return out


def report(world, zoo: Path) -> dict:
    """The base policy's gold and every source's accuracy on the zoo's v1 / v2 benchmarks."""
    from analysis.rewardbench import score_v1, score_v2

    base = base_accuracy(zoo / "base", world)
    v1, v2 = read_jsonl(zoo / "data" / "bench_v1.jsonl"), read_jsonl(zoo / "data" / "bench_v2.jsonl")
    sources = reward_sources(zoo, world)
    static = {name: {"v1": score_v1(src, v1), "v2": score_v2(src, v2)} for name, src in sources.items()}
    return {"base_gold_accuracy": base["overall"], "base": base,
            "static_accuracy": {n: s["v1"]["overall"] for n, s in static.items()},
            "static_accuracy_v2": {n: s["v2"]["overall"] for n, s in static.items()},
            "static": static, "judge_parse_failures": sources["judge"].parse_failures,
            "referee": json.loads((zoo / "referee" / "referee.json").read_text())}


def format_info(info: dict) -> str:
    lines = [f"zoo {info['key']} (world {info['world']}), built in {sum(info['stage_s'].values()):.1f}s "
             f"({', '.join(f'{k} {v}s' for k, v in info['stage_s'].items())})",
             f"base policy gold at T=1: {info['base_gold_accuracy']:.3f} "
             f"(add accuracy {info['base']['add']:.3f}, open quality {info['base']['open']:.3f})",
             f"{'source':<12}{'v1 (pairs)':>12}{'v2 (best-of-4, Ties)':>24}"]
    for name, s in info["static"].items():
        lines.append(f"{name:<12}{s['v1']['overall']:>12.3f}{s['v2']['overall']:>24.3f}")
    ref = info["referee"]
    lines.append(f"referee: {ref['sft_steps']} SFT steps" + (f", greedy parse rate {ref['checks'][-1]['parse_rate']:.2f}"
                                                             if ref["checks"] else ""))
    lines.append("v1 per subset:")
    subsets = list(next(iter(info["static"].values()))["v1"])
    lines.append(f"{'':<12}" + "".join(f"{s[:20]:>22}" for s in subsets))
    for name, s in info["static"].items():
        lines.append(f"{name:<12}" + "".join(f"{s['v1'][k]:>22.3f}" for k in subsets))
    return "\n".join(lines)
