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
        # With tied embeddings the CPU lm_head GEMM may use a copy packed at load time, which
        # reload_weights does not touch: copy the embedding and re-pack both layers ourselves.
        model = self.model_runner.get_model()
        emb = tensors.get("model.embed_tokens.weight")
        if emb is None or not getattr(model.config, "tie_word_embeddings", False):
            return
        embed = model.model.embed_tokens
        embed.weight.data[: emb.shape[0]].copy_(emb.to(embed.weight.dtype))
        for layer in (embed, model.lm_head):
            method = getattr(layer, "quant_method", None)
            if method is not None and hasattr(method, "process_weights_after_loading"):
                method.process_weights_after_loading(layer)
