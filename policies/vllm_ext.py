"""vLLM worker extension for in-place weight sync (mixed into the worker by `worker_extension_cls`).

Kept in its own small module because vLLM imports it by qualified name inside worker processes.
"""
from __future__ import annotations

from policies.shm_weights import Reader, read


class WeightSync:
    def reload_from(self, path: str, refresh_tied_head: bool = True, in_place: bool = False, keep: bool = False) -> str:
        """Load the weights in `path`; which way: "in_place" (copied; "in_place_loader": by vLLM's loader where
        the file does not map one to one), "repack" or "reload". `keep`: the file is
        rewritten in place for later syncs (the loop's), so its mapping is kept for them (`Reader`)."""
        if not keep:
            self._kept().close()
        # Straight from the file where the model's layout allows (`_repack`, which only reads it: the kept
        # mapping is read-only): torch's matmuls (engine.cpu_gemm) compute with the parameters, so a copy
        # (vLLM's generic loader took 4.5 of an arith sync's 5 ms); oneDNN packs the CPU linear weights
        # after loading and drops the originals (model.load_weights() fails), so a copy and a re-pack.
        kept = self._kept().read(path) if keep else None
        tensors = read(path) if kept is None else kept
        if self._repack(tensors, refresh_tied_head, pack=not in_place):
            return "in_place" if in_place else "repack"
        if kept is not None:  # vLLM's loader gets a private mapping, as before: it may write to what it reads
            self._kept().close()
            tensors = read(path)
        if in_place:
            self.model_runner.get_model().load_weights(iter(tensors.items()))
            return "in_place_loader"
        # reload_weights() re-runs vLLM's loader, packing included
        self.model_runner.reload_weights(weights_iterator=iter(tensors.items()), is_checkpoint_format=True)
        if refresh_tied_head:
            self._refresh_tied_head(tensors)
        return "reload"

    def _kept(self) -> Reader:
        if not hasattr(self, "_reader"):
            self._reader = Reader()
        return self._reader

    def _repack(self, tensors: dict, refresh_tied_head: bool, pack: bool = True) -> bool:
        """The sync without vLLM's layer-by-layer reload (which rebuilds every layer on fresh memory and
        copies it back: at SmolLM2-135M 0.31-0.40 s of which the packing is ~0.15): each packed linear
        layer gets its weight from the file (the checkpoint's parts concatenated, per the model's
        `packed_modules_mapping`: q, k, v -> qkv_proj) and vLLM's own `process_weights_after_loading`
        packs it as at load; every other parameter is copied in place, and a layer computing with a
        packed copy of a weight just copied (a tied lm_head, whose weight is the embedding's, or an
        embedding a model uses as its head) is packed again. False, nothing changed, when a parameter or a file tensor does not
        map one to one (another architecture, a sharded or quantized layer): the caller reloads. `pack=False`
        (torch's matmuls, which compute with the parameters themselves): the copies only."""
        import torch

        from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding

        model = self.model_runner.get_model()
        stacked = getattr(model, "packed_modules_mapping", None) or {}
        # an embedding's packed copy serves only as an LM head (its forward is a lookup): where a head
        # module shares its weight, that module's copy is the one used (at 135M each packing is ~0.12 s)
        heads = {id(m.weight) for m in model.modules() if isinstance(m, ParallelLMHead)}

        def parts(qual: str) -> list[str]:
            module, _, leaf = qual.rpartition(".")
            parent, _, short = module.rpartition(".")
            return [".".join(filter(None, (parent, p, leaf))) for p in stacked.get(short, [short])]

        packs, copies, repack, seen, used = [], [], [], set(), set()
        for name, layer in model.named_modules():
            method = getattr(layer, "quant_method", None)
            for pname, param in layer.named_parameters(recurse=False):
                qual = f"{name}.{pname}" if name else pname
                if id(param) in seen:  # a tied lm_head: the embedding's tensor, loaded under its own name
                    if pack and hasattr(layer, "cpu_linear") and refresh_tied_head:
                        repack.append((layer, method))
                    continue
                seen.add(id(param))
                keys = parts(qual)
                if any(k not in tensors for k in keys):
                    return False
                used.update(keys)
                src = [tensors[k] for k in keys]
                if pname == "weight" and hasattr(layer, "cpu_linear") and param.numel() == 0:  # packed, weight dropped
                    width = getattr(layer, "input_size_per_partition", None)
                    if [t.shape[0] for t in src] != list(getattr(layer, "output_partition_sizes", [])) or any(
                            t.shape[1:] != (width,) for t in src):
                        return False
                    packs.append((layer, method, src))
                    continue
                rows = sum(t.shape[0] for t in src)
                if param.dim() == 0 or any(t.shape[1:] != param.shape[1:] for t in src) or rows > param.shape[0] or (
                        rows < param.shape[0] and not (len(src) == 1 and isinstance(layer, VocabParallelEmbedding))):  # a padded vocabulary
                    return False
                copies.append((param, src))
                lookup_only = isinstance(layer, VocabParallelEmbedding) and not isinstance(layer, ParallelLMHead) and (
                    id(param) in heads)
                if pack and hasattr(layer, "cpu_linear") and pname == "weight" and not lookup_only:
                    repack.append((layer, method))
        if used != set(tensors):
            return False
        with torch.no_grad():
            for param, src in copies:
                dst = param.data
                for t in src:
                    dst[: t.shape[0]].copy_(t)
                    dst = dst[t.shape[0]:]
            for layer, method, src in packs:
                weight = _joined(src)
                layer.weight = torch.nn.Parameter(weight.to(layer.weight.dtype), requires_grad=False)
                method.process_weights_after_loading(layer)
                if layer.weight.numel() and layer.weight.data_ptr() == src[0].data_ptr():
                    # kept unpacked (vLLM's fallback to torch's matmul): a view of the file the learner
                    # rewrites in place would change the served weights before the next sync
                    layer.weight = torch.nn.Parameter(layer.weight.clone(), requires_grad=False)
            for layer, method in repack:
                method.process_weights_after_loading(layer)
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


def _joined(src: list):
    """A packed layer's parts (q, k, v) as one tensor: a view where they lie back to back in the file, as
    the learner's state dict orders them (no copy: at SmolLM2-135M the concatenations were 0.03 s of a
    0.2-s sync), else (a checkpoint file's sorted names: k, o, q, v) their concatenation."""
    import torch

    first = src[0]
    if len(src) == 1:
        return first
    size = first.element_size()
    if not all(t.dtype == first.dtype and t.is_contiguous() for t in src) or any(
            a.data_ptr() + a.numel() * size != b.data_ptr() for a, b in zip(src, src[1:])):
        return torch.cat(src)
    rows = sum(t.shape[0] for t in src)
    return first.new_empty(0).set_(first.untyped_storage(), first.storage_offset(), (rows, *first.shape[1:]))
