"""The learner's log-probs against independent computations: the sampling temperature, dropout,
truncated importance sampling. The learner runs in-process here (no Ray): the same class the loop
puts in an actor."""
import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import AutoModelForCausalLM

from policies.engine import Sampling, make_engine
from policies.tiny import random_model
from rl.algos import common
from rl.learner import Learner
from tests.test_config import CONF

PROMPTS = ["Q:12+34=", "W:abcd="]


def algo_cfg(*overrides):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=["algo=grpo", *overrides]).algo


@pytest.fixture(scope="module")
def peaked_model(tmp_path_factory):
    """A random tiny model with its embeddings (tied: also the head) doubled: top next-token probability
    0.12 at T = 1 and 0.28 at T = 0.7 after "Q:12+34=" instead of a near-uniform 0.02,
    so its next-token distribution is far from uniform and a temperature visibly changes it."""
    path = random_model(tmp_path_factory.mktemp("peaked") / "model", "tiny", seed=3)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(2)
    model.save_pretrained(path, safe_serialization=True)
    return str(path)


def hand_logprobs(model, rollout, temperature):
    """log softmax(logits / T) of each completion token, one sequence at a time (no padding)."""
    ids = torch.tensor([rollout.prompt_ids + rollout.completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(rollout.prompt_ids) - 1 : -1]
    return torch.log_softmax(logits / temperature, -1).gather(-1, torch.tensor(rollout.completion_ids)[:, None])[:, 0]


def forward_logprobs(model, b, temperature=1.0):
    """The batch's sampled-token log-probs from one plain forward of `model` over the whole padded batch."""
    return common.token_logprobs_entropy(model(input_ids=b.ids, attention_mask=b.attn).logits, b.ids, temperature)[0]


@pytest.mark.parametrize("fused", [True, False])
def test_learner_logprobs_are_the_sampling_distributions(peaked_model, fused):
    """At T = 0.7: old log-probs are log softmax(logits / 0.7) (checked against a plain forward),
    the sync check's are the engine's T = 1 numbers, the first minibatch's ratio is 1 and the KL to
    the reference at step 0 is 0. Fused (the default GRPO step: one update pass, beta 0): the update's
    own forward fills them and no reference pass runs; not fused (two epochs, beta 0.1 in the
    reward): a pass before the update, and the reference's."""
    T = 0.7
    extra = [] if fused else ["algo.epochs=2", "algo.kl.coef=0.1", "algo.kl.placement=reward", "algo.kl.estimator=k1"]
    learner = Learner(peaked_model, algo_cfg(f"algo.temperature={T}", *extra))
    engine = make_engine("hf", peaked_model)
    rs = engine.generate(PROMPTS, Sampling(n=4, temperature=T, max_tokens=6, seed=0))
    rewards = [float(i % 2) for i in range(len(rs))]
    b = common.prepare(learner, rs, rewards)
    assert b.fused == fused and (b.ref is None) == fused
    model = AutoModelForCausalLM.from_pretrained(peaked_model, dtype=torch.float32).eval()
    if fused:
        assert b.old.abs().max() == 0  # nothing computed before the update
        adv = torch.tensor(rewards) - 0.5
        stats = common.policy_update(learner, b, adv, b.mask.float())
        assert stats["policy/clipfrac"] == 0 and stats["policy/approx_kl"] == 0  # ratio exactly 1
        assert "kl/k1" not in common.metrics(b, adv)
    else:
        with torch.no_grad():
            logp = forward_logprobs(learner.policy, b, T)
        assert torch.exp(logp - b.old)[b.mask].sub(1).abs().max() < 1e-5  # first minibatch: ratio 1
        # the same weights: 0 up to float rounding (the reference is a copy of them at other addresses)
        assert b.kl.abs().max() < 1e-5 and abs(common.metrics(b, torch.zeros(len(rs)))["kl/k1"]) < 1e-5
    for i, r in enumerate(rs):
        assert torch.allclose(b.old[i][b.mask[i]], hand_logprobs(model, r, T), atol=1e-5)
        assert torch.allclose(b.raw[i][b.mask[i]], hand_logprobs(model, r, 1.0), atol=1e-5)
        assert torch.allclose(b.raw[i][b.mask[i]], torch.tensor(r.logprobs), atol=1e-4)  # the engine's T = 1
        assert not torch.allclose(b.old[i][b.mask[i]], b.raw[i][b.mask[i]], atol=1e-3)  # T matters here
        assert b.entropy[i][b.mask[i]].min() > 0
    if not fused:
        assert learner.evaluate(rs, T)["kl"] == pytest.approx([0.0] * len(rs), abs=1e-5)


def test_fused_update_equals_the_two_pass_update(peaked_model):
    """The same GRPO step fused (the update's forward gives the old log-probs) and not (beta 0.1 in the
    reward forces a pass before the update; the advantages here are given, so the objective is the
    same): the same loss, old / raw log-probs, entropies and weights after the step, to float32 rounding."""
    rs = make_engine("hf", peaked_model).generate(PROMPTS, Sampling(n=4, max_tokens=6, seed=1))
    rewards = [float(i % 3 == 0) for i in range(len(rs))]
    adv = torch.tensor(rewards) - torch.tensor(rewards).mean()
    out = {}
    for fused in (True, False):
        torch.manual_seed(0)
        learner = Learner(peaked_model, algo_cfg(*([] if fused else ["algo.kl.coef=0.1", "algo.kl.placement=reward",
                                                                      "algo.kl.estimator=k1"])))
        b = common.prepare(learner, rs, rewards)
        assert b.fused == fused
        stats = common.policy_update(learner, b, adv, b.mask.float())
        out[fused] = (stats["policy/loss"], b.old.clone(), b.raw.clone(), b.entropy.clone(),
                      torch.cat([p.detach().flatten() for p in learner.policy.parameters()]))
    # the advantages have mean 0, so at ratio 1 the loss is 0 up to rounding: an absolute tolerance
    assert out[True][0] == pytest.approx(out[False][0], rel=1e-5, abs=1e-7)
    for x, y in zip(out[True][1:], out[False][1:]):
        assert torch.allclose(x, y, atol=1e-5)


def test_engine_samples_the_distribution_the_learner_scores(peaked_model):
    """4000 first tokens sampled by vLLM at T = 0.7: the top token's frequency matches the learner's
    exp(old log-prob) at T = 0.7 and is many standard errors from the T = 1 probability."""
    T, N = 0.7, 4000
    engine = make_engine("vllm", peaked_model, dtype="float32")
    try:
        rs = engine.generate(PROMPTS[:1], Sampling(n=N, temperature=T, max_tokens=1, seed=0))
    finally:
        engine.close()
    first = [r.completion_ids[0] for r in rs]
    top = max(set(first), key=first.count)
    learner = Learner(peaked_model, algo_cfg(f"algo.temperature={T}", "algo.epochs=2"))  # old from a pass of its own
    r = next(x for x in rs if x.completion_ids[0] == top)
    b = common.prepare(learner, [r], [0.0])
    p_T, p_1 = b.old[0][b.mask[0]][0].exp().item(), b.raw[0][b.mask[0]][0].exp().item()
    se = (p_T * (1 - p_T) / N) ** 0.5
    assert abs(p_T - p_1) > 8 * se, (p_T, p_1)  # the test can tell the two temperatures apart
    assert abs(first.count(top) / N - p_T) < 4 * se, (first.count(top) / N, p_T, p_1)


def test_learner_forward_has_dropout_off(tmp_path):
    """A policy whose config has attention dropout 0.5: the learner's two forward passes agree (ratio
    1 on the first minibatch) and match the engine, which serves without dropout."""
    path = random_model(tmp_path / "m", "tiny", seed=0)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(config | {"attention_dropout": 0.5}))
    learner = Learner(str(path), algo_cfg("algo.epochs=2"))  # old log-probs from a pass of their own
    rs = make_engine("hf", str(path)).generate(PROMPTS, Sampling(n=2, max_tokens=6, seed=0))
    b = common.prepare(learner, rs, [0.0, 1.0] * 2)
    with torch.no_grad():
        logp = forward_logprobs(learner.policy, b)
        assert (logp - b.old)[b.mask].abs().max() < 1e-6
        assert (b.raw - b.engine_lp)[b.mask].abs().max() < 1e-4
        learner.policy.train()  # what the learner did before: dropout on, the passes differ
        dropped = forward_logprobs(learner.policy, b)
    assert (dropped - b.old)[b.mask].abs().max() > 1e-3


def test_tis_weights_scale_the_policy_gradient(peaked_model):
    """tis_cap: each token's policy-gradient loss is multiplied by min(pi_learner / pi_engine, cap).
    Engine log-probs shifted by hand (-0.5 on every token: ratio e^0.5 = 1.649 > cap 1.5) make every
    weight the cap, so the first update's loss is 1.5 x the loss without TIS."""
    rs = make_engine("hf", peaked_model).generate(PROMPTS, Sampling(n=4, max_tokens=6, seed=0))
    for r in rs:
        r.logprobs = [lp - 0.5 for lp in r.logprobs]
    losses = {}
    for cap in (None, 1.5):
        torch.manual_seed(0)
        learner = Learner(peaked_model, algo_cfg(f"algo.tis_cap={cap or 'null'}"))
        b = common.prepare(learner, rs, [float(i % 3 == 0) for i in range(len(rs))])
        adv = torch.tensor([float(i % 3 == 0) for i in range(len(rs))]) - 1 / 3
        losses[cap] = common.policy_update(learner, b, adv, b.mask.float())
    assert losses[1.5]["policy/tis_weight"] == pytest.approx(1.5) and losses[1.5]["policy/tis_capped"] == 1.0
    assert losses[1.5]["policy/loss"] == pytest.approx(1.5 * losses[None]["policy/loss"], rel=1e-5)


def test_rloo_weights_every_token_equally(peaked_model):
    """RLOO's default aggregation is OpenRLHF's token mean. Two prompts x 2 samples, rewards
    [1, 0, 0, 1] -> leave-one-out advantages [1, -1, -1, 1]; completions of 1, 3, 4 and 2 tokens.
    At ratio 1 the loss is -(1*1 - 1*3 - 1*4 + 1*2) / (1 + 3 + 4 + 2) = 0.4 (a per-sequence mean would
    give -(1 - 1 - 1 + 1) / 4 = 0)."""
    from policies.engine import Rollout

    learner = Learner(peaked_model, algo_cfg("algo=rloo", "algo.samples_per_prompt=2"))
    tok = make_engine("hf", peaked_model).tokenizer
    prompt = tok("Q:1+2=", add_special_tokens=False).input_ids
    rs = [Rollout(i // 2, prompt, tok("abcd"[:n], add_special_tokens=False).input_ids, "", [0.0] * n, "length")
          for i, n in enumerate((1, 3, 4, 2))]
    m = learner.algo.update(learner, rs, [1.0, 0.0, 0.0, 1.0])
    assert m["policy/loss"] == pytest.approx(0.4, abs=1e-6)
