"""vLLM worker extension for in-place weight sync (mixed into the worker by `worker_extension_cls`).

Kept in its own small module because vLLM imports it by qualified name inside worker processes.
"""
from __future__ import annotations

from policies.shm_weights import read


class WeightSync:
    def reload_from(self, path: str, refresh_tied_head: bool = True, in_place: bool = False) -> bool:
        tensors = read(path)  # views of the file: both paths copy them into the parameters
        if in_place:  # torch matmuls (engine.cpu_gemm): the parameters are what the model computes with
            self.model_runner.get_model().load_weights(iter(tensors.items()))
            return True
        # oneDNN packs the CPU linear weights after loading and drops the originals, so
        # model.load_weights() fails; reload_weights() re-runs the loader, packing included.
        self.model_runner.reload_weights(weights_iterator=iter(tensors.items()), is_checkpoint_format=True)
        if refresh_tied_head:
            self._refresh_tied_head(tensors)
        return True

    def _refresh_tied_head(self, tensors: dict) -> None:
        # With tied embeddings the CPU lm_head GEMM uses a copy packed at load time, which reload_weights
        # leaves as it was (the checkpoint has no lm_head): re-pack it from the embedding, which the reload
        # has updated in place (the head's weight is the embedding's tensor). The embedding itself is not
        # copied or re-packed again: at SmolLM2-135M that was 0.04 s of a 0.45 s reload (BENCHMARKS.md).
        model = self.model_runner.get_model()
        if "model.embed_tokens.weight" not in tensors or not getattr(model.config, "tie_word_embeddings", False):
            return
        method = getattr(model.lm_head, "quant_method", None)
        if method is not None and hasattr(method, "process_weights_after_loading"):
            method.process_weights_after_loading(model.lm_head)
