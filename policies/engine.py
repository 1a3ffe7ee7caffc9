"""The rollout-engine contract shared by the vLLM and HF engines.

An engine turns prompts into `Rollout`s and accepts new weights. Log-probs are those of the
sampled tokens under the model at temperature 1 with no top-p truncation (vLLM's
"raw_logprobs"), which is exactly what a learner recomputes with `policies.logprobs`.
"""
from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

Prompt = str | list[dict] | list[int]  # plain text | chat messages | token ids


class EngineError(RuntimeError):
    """A configuration or input problem, reported before the engine library sees it."""


@dataclass
class Rollout:
    prompt_index: int  # which prompt of the call this sample answers
    prompt_ids: list[int]
    completion_ids: list[int]  # includes the EOS token when the model emitted it
    text: str  # completion text, special tokens and the stop string removed
    logprobs: list[float]  # one per completion token
    finish_reason: str  # "stop" (EOS or a stop string) or "length"


@dataclass
class Sampling:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 64
    seed: int | None = None
    stop: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.n < 1 or self.max_tokens < 1:
            raise EngineError(f"sampling needs n >= 1 and max_tokens >= 1, got n={self.n}, max_tokens={self.max_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise EngineError(f"sampling needs temperature >= 0 and 0 < top_p <= 1, got {self.temperature}, {self.top_p}")


class Engine(Protocol):
    tokenizer: Any

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[Rollout]:
        """Rollouts in prompt-major order: n samples of prompt 0, then of prompt 1, ..."""

    def load_weights(self, state_dict: dict | str) -> float:
        """Replace the served weights in place from tensors or a safetensors file (`weights_file`);
        returns seconds taken."""

    def close(self) -> None: ...


def check_model_dir(path: str | os.PathLike, key: str = "policy.path") -> Path:
    p = Path(path)
    if not (p / "config.json").is_file():
        what = "does not exist" if not p.exists() else "has no config.json (not an HF model directory)"
        raise EngineError(f"model path {str(p)!r} (config key {key}) {what}")
    return p


def encode_prompts(tokenizer, prompts: Sequence[Prompt]) -> list[list[int]]:
    """Token ids for each prompt; message lists go through the tokenizer's chat template."""
    out = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            out.append(tokenizer(p, add_special_tokens=False).input_ids)
        elif isinstance(p, (list, tuple)) and p and all(isinstance(t, int) for t in p):
            out.append(list(p))
        elif isinstance(p, (list, tuple)) and p and all(isinstance(m, dict) and "role" in m and "content" in m for m in p):
            if not getattr(tokenizer, "chat_template", None):
                raise EngineError(f"prompt {i} is a message list but the tokenizer has no chat template")
            out.append(list(tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True,
                                                          return_dict=False)))
        else:
            raise EngineError(f"prompt {i} must be a string, a list of token ids or a list of "
                              f"{{'role', 'content'}} messages; got {type(p).__name__} {str(p)[:60]!r}")
        if not out[-1]:
            raise EngineError(f"prompt {i} is empty")
    return out


def check_state_keys(expected: set, got: set, where: str, optional: set = frozenset()) -> None:
    """A weight sync must carry exactly the served model's tensors (`optional` may be absent)."""
    missing, extra = expected - got - optional, got - expected - optional
    if missing or extra:
        raise EngineError(f"weight sync: state dict does not match {where}: missing {len(missing)} "
                          f"{sorted(missing)[:5]}, unexpected {len(extra)} {sorted(extra)[:5]}")


def weights_file(tag: str = "sync") -> str:
    """A fresh path for a weight-sync safetensors file, in shared memory where there is one (a file in
    /dev/shm is a copy in RAM: written by the learner, read by the engine on the same node)."""
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    return os.path.join(shm, f"rlhf-{tag}-{os.getpid()}-{uuid.uuid4().hex}.safetensors")


def remove_stale_weights_files(tag: str = "sync") -> list[str]:
    """`weights_file` paths whose process is gone (a run killed before it removed its file: each holds
    the policy's size in RAM), removed; their paths."""
    import glob

    gone = []
    for path in glob.glob(os.path.join(os.path.dirname(weights_file(tag)), f"rlhf-{tag}-*-*.safetensors")):
        try:
            os.kill(int(os.path.basename(path).split("-")[2]), 0)
        except ProcessLookupError:
            os.remove(path)
            gone.append(path)
        except (ValueError, PermissionError):  # not our naming, or another user's live process
            pass
    return gone


def file_keys(path: str) -> set[str]:
    from safetensors import safe_open

    with safe_open(path, "pt") as fh:
        return set(fh.keys())


ENGINES = ("hf", "vllm")


def check_engine_name(name: str) -> None:
    if name not in ENGINES:
        raise EngineError(f"unknown engine {name!r} (config key engine.name); expected one of: {', '.join(ENGINES)}")


def make_engine(name: str, model_path: str, **kwargs) -> Engine:
    """Build an engine by its config name (`engine.name`)."""
    check_engine_name(name)
    if name == "vllm":
        from policies.vllm_engine import VLLMEngine
        return VLLMEngine(model_path, **kwargs)
    from policies.hf_engine import HFEngine
    return HFEngine(model_path, **kwargs)
