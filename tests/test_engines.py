"""The engine contract, run against both engines on the same tiny trained model."""
import pytest
import torch
from transformers import AutoModelForCausalLM

from policies.engine import EngineError, Sampling, make_engine
from policies.logprobs import check_logprobs
from tests.helpers import ANSWER_LEN

PROMPTS = ["Q:123=", "Q:007=", "Q:555="]


@pytest.fixture(scope="module", params=["hf", "vllm"])
def engine(request, echo_model):
    e = make_engine(request.param, echo_model, dtype="float32")
    yield e
    e.close()


def test_n_samples_in_prompt_major_order(engine):
    rs = engine.generate(PROMPTS, Sampling(n=4, max_tokens=20, seed=0))
    assert [r.prompt_index for r in rs] == [0] * 4 + [1] * 4 + [2] * 4
    tok = engine.tokenizer
    for r in rs:
        assert r.prompt_ids == tok(PROMPTS[r.prompt_index]).input_ids
        assert len(r.logprobs) == len(r.completion_ids)
    assert len({r.text for r in rs}) > 8  # temperature 1 over 26 letters: samples differ


def test_eos_ends_generation(engine):
    rs = engine.generate(PROMPTS, Sampling(n=4, max_tokens=20, seed=1))
    eos = engine.tokenizer.eos_token_id
    for r in rs:
        assert r.finish_reason == "stop"
        assert r.completion_ids[-1] == eos and eos not in r.completion_ids[:-1]
        # one character per letter token, EOS not in the text. (Not asserted: exactly ANSWER_LEN
        # letters. The echo model learned that length only mostly: on one CPU a sample ran to 9.)
        assert len(r.text) == len(r.completion_ids) - 1 and r.text.isalpha()
    assert sum(len(r.text) == ANSWER_LEN for r in rs) >= len(rs) // 2


def test_max_tokens_respected(engine):
    rs = engine.generate(PROMPTS, Sampling(n=2, max_tokens=3, seed=0))
    assert all(len(r.completion_ids) == 3 and r.finish_reason == "length" for r in rs)


def test_seeds_reproducible(engine):
    s = Sampling(n=3, max_tokens=12, seed=11)
    a, b = engine.generate(PROMPTS, s), engine.generate(PROMPTS, s)
    c = engine.generate(PROMPTS, Sampling(n=3, max_tokens=12, seed=12))
    assert [r.completion_ids for r in a] == [r.completion_ids for r in b]
    assert [r.completion_ids for r in a] != [r.completion_ids for r in c]
    # One seed per call, not per prompt: different prompts must not draw the same samples.
    assert a[0].text != a[3].text != a[6].text


def test_stop_string_cuts_text(engine):
    full = engine.generate(["Q:321="], Sampling(max_tokens=12, seed=5))[0].text
    k = next(k for k in range(1, len(full)) if full[k] not in full[:k])
    cut = engine.generate(["Q:321="], Sampling(max_tokens=12, seed=5, stop=[full[k]]))[0]
    assert cut.text == full[:k] and cut.finish_reason == "stop"
    assert len(cut.completion_ids) == k + 1 == len(cut.logprobs)  # up to the token holding the stop string


def test_logprobs_match_policy_recompute(engine, echo_model):
    rs = engine.generate(PROMPTS, Sampling(n=4, max_tokens=12, seed=2))
    policy = AutoModelForCausalLM.from_pretrained(echo_model, dtype=torch.float32)
    diff = check_logprobs(policy, rs)
    assert diff["tokens"] == sum(len(r.completion_ids) for r in rs)
    assert diff["max"] < 1e-4


def test_chat_prompt_uses_template(engine):
    msgs = [{"role": "user", "content": "Q:1"}]
    r = engine.generate([msgs], Sampling(max_tokens=2, seed=0))[0]
    expected = engine.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert engine.tokenizer.decode(r.prompt_ids) == expected


def test_token_id_prompts(engine):
    ids = engine.tokenizer("Q:123=").input_ids
    a = engine.generate([ids], Sampling(temperature=0, max_tokens=12))[0]
    b = engine.generate(["Q:123="], Sampling(temperature=0, max_tokens=12))[0]
    assert a.completion_ids == b.completion_ids


@pytest.mark.parametrize("bad, msg", [([{"x": 1}], "prompt 0 must be"), ([""], "prompt 0 is empty"),
                                      ([3.5], "prompt 0 must be")])
def test_bad_prompts_rejected(engine, bad, msg):
    with pytest.raises(EngineError, match=msg):
        engine.generate(bad, Sampling())


def test_engines_agree_greedily(echo_model, engine):
    other = make_engine("hf", echo_model)
    s = Sampling(temperature=0, max_tokens=12)
    assert [r.completion_ids for r in engine.generate(PROMPTS, s)] == \
        [r.completion_ids for r in other.generate(PROMPTS, s)]


@pytest.mark.parametrize("name", ["hf", "vllm"])
def test_missing_model_path_is_clear(name, tmp_path):
    with pytest.raises(EngineError, match=r"model path '.*nope' \(config key policy.path\) does not exist"):
        make_engine(name, str(tmp_path / "nope"))


def test_unknown_engine_name():
    with pytest.raises(EngineError, match=r"unknown engine 'sglang' \(config key engine.name\); expected one of: hf, vllm"):
        make_engine("sglang", "/tmp")


def test_bad_sampling():
    with pytest.raises(EngineError, match="n >= 1"):
        Sampling(n=0)
    with pytest.raises(EngineError, match="top_p"):
        Sampling(top_p=0)


def test_cpu_gemm_choice():
    from policies.vllm_engine import cpu_gemm_choice

    # auto: torch's matmuls for small float32 models (hidden <= 128), oneDNN's packed ones otherwise
    assert cpu_gemm_choice("auto", {"hidden_size": 64}, "float32") == "torch"
    assert cpu_gemm_choice("auto", {"hidden_size": 128}, "float32") == "torch"
    assert cpu_gemm_choice("auto", {"hidden_size": 256}, "float32") == "onednn"
    assert cpu_gemm_choice("auto", {"hidden_size": 576}, "float32") == "onednn"
    assert cpu_gemm_choice("auto", {"hidden_size": 128}, "bfloat16") == "onednn"
    assert cpu_gemm_choice("auto", {}, "float32") == "onednn"  # no size in the config: the default
    assert cpu_gemm_choice("onednn", {"hidden_size": 128}, "float32") == "onednn"
    assert cpu_gemm_choice("torch", {"hidden_size": 576}, "float32") == "torch"
    with pytest.raises(EngineError, match=r"engine.cpu_gemm='mkl'; expected one of: auto, onednn, torch"):
        cpu_gemm_choice("mkl", {"hidden_size": 128}, "float32")


def refaults(n: int = 113 * 2**20) -> int:
    """Page faults filling an n-byte block again after freeing one (what each oneDNN sync does with a
    packed head: SmolLM2-135M's is 108 MB)."""
    import ctypes
    import resource

    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes, libc.memset.argtypes = [ctypes.c_void_p], [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]

    def filled():
        p = libc.malloc(n)
        libc.memset(p, 1, n)
        return p

    libc.free(filled())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    libc.free(filled())
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_the_engines_malloc_refills_a_freed_block_without_page_faults():
    """engine.malloc_reuse: a 113 MB block freed and asked for again is served from the pages already
    held. glibc's default unmaps it, so all 113 MB / 4 KB = 28,928 pages fault in again (fewer where the
    kernel backs it with 2-MB pages)."""
    import subprocess
    import sys
    from pathlib import Path

    def faults(reuse: bool):
        code = ("from policies.vllm_engine import keep_freed_memory; from tests.test_engines import refaults; "
                f"assert keep_freed_memory() if {reuse} else True; print(refaults())")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent.parent)
        return int(out.stdout.split()[-1])

    assert faults(True) < 289  # under 1% of the pages
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp.exists() and "[always]" not in thp.read_text():
        assert faults(False) >= 28_928 * 0.99


def test_a_vllm_engine_keeps_freed_memory_by_default(engine):
    """The engine's process (here the test's) has engine.malloc_reuse's setting once an engine is up."""
    from policies.vllm_engine import VLLMEngine

    if not isinstance(engine, VLLMEngine):
        pytest.skip("the vLLM engine's setting")
    assert refaults() < 289
