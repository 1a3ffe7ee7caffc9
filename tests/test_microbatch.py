"""The learner at real-model sizes: chunked log-probs (no float32 batch x length x vocabulary copy),
micro-batches with gradient accumulation, `algo.device`. Tiny random models, the learner in-process."""
import copy
import math

import pytest
import torch
from hydra import compose, initialize_config_dir

from policies.engine import Rollout
from policies.logprobs import completion_logprobs, first_completion, pad_rollouts, token_logprobs
from policies.tiny import random_model
from rl.algos import common
from rl.learner import Learner
from tests.test_config import CONF


def algo_cfg(*overrides):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=["algo=grpo", "algo.device=cpu", *overrides]).algo


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return str(random_model(tmp_path_factory.mktemp("mb") / "model", "tiny", seed=1))


def rollouts(vocab: int) -> list[Rollout]:
    """4 prompts x 2 samples, prompts of 2-5 tokens, completions of 1-7: different lengths everywhere."""
    g = torch.Generator().manual_seed(0)
    rs = []
    for i in range(8):
        prompt = torch.randint(3, vocab, (2 + (i // 2) % 4,), generator=g).tolist()
        completion = torch.randint(3, vocab, (1 + (3 * i) % 7,), generator=g).tolist()
        rs.append(Rollout(i // 2, prompt, completion, "", [-1.0] * len(completion), "length"))
    return rs


@pytest.mark.parametrize("entropy_used", [True, False])
def test_chunked_logprobs_equal_the_full_log_softmax(entropy_used):
    """Chunks of 4 rows over B x T = 15 rows (not a multiple): the same log-probs, entropies and
    gradients as one log_softmax over the whole (B, T, V) tensor, at a temperature != 1."""
    torch.manual_seed(0)
    B, T, V, temp = 3, 5, 11, 0.7
    logits = (3 * torch.randn(B, T, V)).requires_grad_()
    ids = torch.randint(0, V, (B, T))
    w_lp, w_ent = torch.randn(B, T - 1), torch.randn(B, T - 1)

    lsm = (logits[:, :-1] / temp).log_softmax(-1)
    full_lp = lsm.gather(-1, ids[:, 1:, None]).squeeze(-1)
    full_ent = -(lsm.exp() * lsm).sum(-1)
    ((full_lp * w_lp).sum() + entropy_used * (full_ent * w_ent).sum()).backward()
    full_grad, logits.grad = logits.grad, None

    lp, ent = common.token_logprobs_entropy(logits, ids, temp, chunk=4)
    ((lp * w_lp).sum() + (entropy_used and (ent * w_ent).sum())).backward()
    assert (lp - full_lp).abs().max() < 1e-6 and (ent - full_ent).abs().max() < 1e-6
    assert (logits.grad - full_grad).abs().max() < 1e-6


def one_step(path, rs, rewards, *overrides):
    """The parameter gradients, and statistics, of one GRPO optimizer step over the whole batch."""
    torch.manual_seed(0)  # the minibatch's shuffle
    learner = Learner(path, algo_cfg("algo.samples_per_prompt=2", "algo.minibatch=8", "algo.epochs=1",
                                     "algo.dynamic_sampling=mask", "algo.kl.coef=0.1", "algo.entropy_coef=0.01",
                                     "algo.max_grad_norm=1e9", *overrides))
    m = learner.update(rs, rewards)
    return {k: p.grad.clone() for k, p in learner.policy.named_parameters()}, m


@pytest.mark.parametrize("agg", ["grpo", "dapo", "dr_grpo"])
def test_micro_batches_accumulate_the_minibatch_gradient(model_path, agg):
    """micro_batch=3 over a minibatch of 8 (3 + 3 + 2), or passes of at most 20 padded tokens, sequences
    of different lengths, groups 0 and 2 with equal rewards (left out of the loss by dynamic sampling:
    fully masked sequences): the gradient of the step is the whole minibatch's, for each aggregation's
    denominator; with the prompts' forwards shared (the default) or one plain forward per sequence."""
    rs = rollouts(Learner(model_path, algo_cfg()).policy.config.vocab_size)
    rewards = [1.0, 1.0, 0.0, 1.0, 0.5, 0.5, 1.0, 0.0]
    full, m_full = one_step(model_path, rs, rewards, f"algo.loss_agg={agg}")
    micro, m_micro = one_step(model_path, rs, rewards, f"algo.loss_agg={agg}", "algo.micro_batch=3",
                              "algo.logprob_chunk=7")
    full_off, _ = one_step(model_path, rs, rewards, f"algo.loss_agg={agg}", "algo.share_prompt=false")
    by_tokens, m_tokens = one_step(model_path, rs, rewards, f"algo.loss_agg={agg}", "algo.micro_tokens=20")
    assert m_full["grpo/zero_var_groups"] == 0.5
    assert max((full_off[k] - g[k]).abs().max().item() for g in (micro, by_tokens, full) for k in full) < 1e-5
    assert max(g.abs().max().item() for g in full.values()) > 1e-3  # there is a gradient to compare
    for k in ("policy/loss", "policy/clipfrac", "policy/approx_kl", "policy/grad_norm", "policy/entropy", "kl/k3",
              "sync/logprob_diff"):
        assert m_micro[k] == pytest.approx(m_full[k], rel=1e-4, abs=1e-6), k
        assert m_tokens[k] == pytest.approx(m_full[k], rel=1e-4, abs=1e-6), k


@pytest.mark.parametrize("behaviour", [False, True])
def test_rows_without_gradient_run_forward_only(model_path, behaviour):
    """Rewards 1 1 | 1 0 | .5 .5 | 0 1: groups 0 and 2 have advantage 0 and the loss no KL or entropy term,
    so their rows' loss and gradient are 0. The update's backward runs over the other 4 rows only (one
    forward with autograd of 4 rows, one without of the other 4), and the step's gradient and what it logs
    of every row equal a hand computation over all 8 from plain per-sequence forwards: advantages +-0.5 /
    std(1, 0) = +-0.7071, loss (1/8) sum_b -A_b mean_t ratio_bt; the engine's log-probs are the model's
    + 0.05, so the logged |raw - engine| is 0.05 and, with the ratio against the engine's
    (`async_generation`), ratio = e^-0.05 and approx_kl = k3 = e^-0.05 - 1 + 0.05 on every token. A step
    whose rewards are all equal runs forward only and steps on a zero gradient."""
    learner = Learner(model_path, algo_cfg("algo.samples_per_prompt=2", "algo.share_prompt=false",
                                           "algo.max_grad_norm=1e9", f"algo.async_generation={behaviour}"))
    model = copy.deepcopy(learner.policy)
    rs, lps, ents = [], [], []
    for r in rollouts(model.config.vocab_size):
        ids = torch.tensor([r.prompt_ids + r.completion_ids])
        lsm = model(input_ids=ids).logits[0, len(r.prompt_ids) - 1 : -1].log_softmax(-1)
        lp = lsm.gather(-1, torch.tensor(r.completion_ids)[:, None])[:, 0]
        lps.append(lp)
        ents.append(-(lsm.exp() * lsm).sum(-1).detach())
        rs.append(Rollout(r.prompt_index, r.prompt_ids, r.completion_ids, "", (lp.detach() + 0.05).tolist(), "length"))
    adv = [0, 0, 0.5 / 0.5 ** 0.5, -0.5 / 0.5 ** 0.5, 0, 0, -0.5 / 0.5 ** 0.5, 0.5 / 0.5 ** 0.5]
    old = [lp.detach() + (0.05 if behaviour else 0.0) for lp in lps]
    sum(-a * torch.exp(lp - o).mean() for a, lp, o in zip(adv, lps, old)).div(8).backward()
    calls = []
    learner.policy.register_forward_pre_hook(
        lambda _, args, kw: calls.append((torch.is_grad_enabled(), kw["input_ids"].shape[0])), with_kwargs=True)
    m = learner.update(rs, [1.0, 1.0, 1.0, 0.0, 0.5, 0.5, 0.0, 1.0])
    assert calls == [(False, 4), (True, 4)]
    grads = {k: p.grad for k, p in learner.policy.named_parameters()}
    assert max((grads[k] - p.grad).abs().max().item() for k, p in model.named_parameters()) < 1e-6
    assert max(p.grad.abs().max().item() for p in model.parameters()) > 1e-3  # there is a gradient to compare
    assert m["policy/entropy"] == pytest.approx(torch.cat(ents).mean().item(), rel=1e-5)
    assert m["sync/logprob_diff"] == pytest.approx(0.05, rel=1e-4)
    kl = math.exp(-0.05) - 1 + 0.05 if behaviour else 0.0
    assert m["policy/approx_kl"] == pytest.approx(kl, rel=1e-3, abs=1e-7) and m["policy/clipfrac"] == 0
    m = learner.update(rs, [1.0] * 8)  # no row with a gradient: the step runs on a zero gradient
    assert m["policy/updates"] == 1 and m["policy/grad_norm"] == 0 and calls[2:] == [(False, 8)]


def test_padded_batch_and_engine_logprobs_by_hand():
    """Prompt 5 6 + completion 7, prompt 5 + 8 9 10, prompt 4 4 4 with no completion: right-padded ids, the
    attention mask, the completion mask (column t: token t + 1 is a completion token) and the engine's
    log-probs laid out on it; log-probs that do not match the tokens name the rollout."""
    rs = [Rollout(0, [5, 6], [7], "", [-0.1], "stop"), Rollout(1, [5], [8, 9, 10], "", [-0.2, -0.3, -0.4], "length"),
          Rollout(2, [4, 4, 4], [], "", [], "length")]
    ids, attn, mask = pad_rollouts(rs)
    assert ids.tolist() == [[5, 6, 7, 0], [5, 8, 9, 10], [4, 4, 4, 0]]
    assert attn.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 0]]
    assert mask.tolist() == [[False, True, False], [True, True, True], [False, False, False]]
    assert torch.equal(common.engine_logprobs(rs, mask), torch.tensor([[0, -0.1, 0], [-0.2, -0.3, -0.4], [0, 0, 0]]))
    rs[1] = Rollout(1, [5], [8, 9, 10], "", [-0.2, -0.3], "length")
    with pytest.raises(ValueError, match="rollout 1: 2 log-probs for 3 completion tokens"):
        common.engine_logprobs(rs, mask)


def test_micro_batches_by_padded_tokens():
    """Lengths 5 9 3 9 4 7 (sequences 10..15): longest first, a pass holds sequences while their count
    x the pass's longest fits the budget; a sequence longer than the budget is a pass of its own."""
    attn = torch.zeros(6, 12, dtype=torch.long)
    for b, n in enumerate([5, 9, 3, 9, 4, 7]):
        attn[b, :n] = 1
    idx = torch.arange(10, 16)

    def passes(micro, tokens):
        return [t.tolist() for t in common.micro_batches(idx, torch.cat([torch.zeros(10, 12, dtype=torch.long), attn]),
                                                          micro, tokens)]

    assert passes(None, None) == [[10, 11, 12, 13, 14, 15]]  # off: one pass, in the given order
    # longest first: 9 9 7 5 4 3. Budget 20: 2 x 9 = 18 fits, 3 x 9 does not; 2 x 7 fits, 3 x 7 = 21 does not
    assert passes(None, 20) == [[11, 13], [15, 10], [14, 12]]
    assert passes(None, 21) == [[11, 13], [15, 10, 14], [12]]
    assert passes(None, 8) == [[11], [13], [15], [10], [14, 12]]  # 9 and 7 alone exceed 8
    assert passes(2, None) == [[11, 13], [15, 10], [14, 12]]
    assert passes(2, 12) == [[11], [13], [15], [10, 14], [12]]
    # prompts 0 1 0 2 1 2: a group's rows together, groups by their longest (g1: 9, g2: 9, g0: 5)
    group = torch.tensor([0] * 10 + [0, 1, 0, 2, 1, 2])
    full = torch.cat([torch.zeros(10, 12, dtype=torch.long), attn])
    assert [t.tolist() for t in common.micro_batches(idx, full, 2, None, group)] == [[11, 14], [13, 15], [10, 12]]
    assert [t.tolist() for t in common.micro_batches(idx, full, None, 30, group)] == [[11, 14, 13], [15, 10, 12]]


# (prompt length, its samples' completion lengths) -> the model call the packed forward makes
PACKINGS = {
    # each prompt's rows as one pack: 3 rows of at most 24 + 6 tokens, not 10 rows of 28 (every pack is 30)
    "a pack a row": ([(20, [2, 4, 1, 3]), (24, [4, 2]), (22, [0, 3, 4, 1])], (3, 30)),
    # packs of 30, 12, 10 and 8 tokens: the three short ones share the second row (12 + 10 + 8 = 30), not
    # 4 rows of 30 (a row of 60 holding all four costs more attention: 60 x 1.08 > 2 x 30 x 1.04)
    "short packs share a row": ([(20, [4, 4, 2]), (6, [3, 3]), (5, [0, 2, 3]), (4, [1, 3])], (2, 30)),
    # a pack of 40 and five of 10: rows of 50 (1.25x the longest) hold them in two (40 + 10, 4 x 10), not three
    # rows of 40 (40, 4 x 10, 10): 100 slots x 1.07 against 120 x 1.05
    "rows longer than the longest pack": ([(20, [4] * 5)] + [(6, [2, 2])] * 5, (2, 50)),
}


@pytest.mark.parametrize("packing", PACKINGS)
def test_shared_prompt_forward_equals_one_forward_per_sequence(model_path, packing):
    """Prompts with several samples of 0-4 tokens each (one sample with no completion token): the rows
    run packed, a prompt once with its samples' completions after it (`PACKINGS`: the one model call
    expected), and the log-probs of the completion tokens and the parameter gradients of a weighted sum
    of them equal those of a plain forward of each whole sequence."""
    spec, call = PACKINGS[packing]
    model = Learner(model_path, algo_cfg()).policy
    g = torch.Generator().manual_seed(1)
    rs = []
    for i, (plen, clens) in enumerate(spec):
        prompt = torch.randint(3, model.config.vocab_size, (plen,), generator=g).tolist()
        for c in clens:
            rs.append(Rollout(i, prompt, torch.randint(3, model.config.vocab_size, (c,), generator=g).tolist(), "", [], "length"))
    ids, attn, mask = pad_rollouts(rs)
    group, plen = common.prompt_groups(ids, attn, mask)
    assert group.tolist() == [i for i, (_, c) in enumerate(spec) for _ in c]
    assert plen.tolist() == [p for p, c in spec for _ in c]
    weights = torch.randn(mask.shape, generator=g)

    def logprobs_and_grads(shared: bool):
        model.zero_grad()
        f = first_completion(mask)
        logits = common._logits(model, ids, attn, plen, group, f) if shared else model(input_ids=ids, attention_mask=attn).logits[:, f:]
        lp = token_logprobs(logits, ids[:, f:]) * mask[:, f:]
        (lp * weights[:, f:]).sum().backward()
        return lp.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}

    plain, plain_grads = logprobs_and_grads(False)
    calls = []
    hook = model.register_forward_pre_hook(lambda _, args, kw: calls.append(tuple(kw["input_ids"].shape)),
                                           with_kwargs=True)
    shared, shared_grads = logprobs_and_grads(True)
    hook.remove()
    assert calls == [call]
    assert (plain - shared).abs().max() < 1e-5 and plain.abs().sum() > 1
    assert max((plain_grads[k] - shared_grads[k]).abs().max().item() for k in plain_grads) < 1e-4


def test_device_cpu_and_unknown_device(model_path):
    """device=cpu: models, weights out and metrics on the CPU; the KL to the reference after a step
    is the per-sequence one of an independent computation, and so is the engine gap an evaluation asks
    for beside it; an unknown device names algo.device."""
    learner = Learner(model_path, algo_cfg("algo.samples_per_prompt=2", "algo.micro_batch=3"))
    assert learner.device == torch.device("cpu")
    assert all(p.device.type == "cpu" for p in learner.ref.parameters())
    rs = rollouts(learner.policy.config.vocab_size)
    assert learner.evaluate(rs)["kl"] == [0.0] * len(rs)  # before any update the policy is the reference
    m = learner.update(rs, [1.0, 0.0] * 4)
    assert all(type(v) in (float, int) for v in m.values())  # plain numbers, no tensors
    assert all(v.device.type == "cpu" for v in learner.state_dict().values())
    expected = [(p - r).sum().item() for p, r in zip(completion_logprobs(learner.policy, rs),
                                                     completion_logprobs(learner.ref, rs))]
    assert learner.evaluate(rs)["kl"] == pytest.approx(expected, abs=1e-5)
    assert any(abs(k) > 1e-6 for k in expected)  # the step moved the policy
    # the sync check beside it, from the same pass: |policy log p - the engine's (-1 on every token)|
    diffs = torch.cat([(lp + 1).abs() for lp in completion_logprobs(learner.policy, rs)])
    ev = learner.evaluate(rs, engine_gap=True)
    assert ev["kl"] == pytest.approx(expected, abs=1e-5)
    assert ev["gap"] == pytest.approx({"mean": diffs.mean().item(), "max": diffs.max().item(), "tokens": len(diffs)},
                                      rel=1e-5)
    with pytest.raises(ValueError, match="algo.device"):
        Learner(model_path, algo_cfg("algo.device=tpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="algo.device=cuda"):
            Learner(model_path, algo_cfg("algo.device=cuda"))


@pytest.mark.parametrize("passes, shapes", [
    ("algo.micro_batch=3", [(3, 10), (3, 6), (2, 6)]),
    ("algo.micro_tokens=20", [(2, 10), (2, 10), (3, 6), (1, 3)]),
])
def test_ppo_critic_runs_in_the_policy_passes(model_path, passes, shapes):
    """PPO's critic is a model of the policy's size: it runs in the passes `algo.micro_batch` /
    `micro_tokens` give the policy, each cut to its longest sequence. The 8 rollouts are 3, 6, 10, 6, 10,
    6, 10, 6 tokens long: 3 rows a pass, longest first, or at most 20 padded tokens a pass (the shapes by
    hand). The old values are those of one pass over the whole padded batch, and the accumulated value
    gradient of the minibatch is that of the loss by hand over the whole batch in one pass:
    value_coef x the mean over completion tokens of 0.5 max((V - R)^2, (V_old + clip(V - V_old, -0.2, 0.2) - R)^2)."""
    from rl.algos import ppo

    learner = Learner(model_path, algo_cfg("algo=ppo", "algo.epochs=1", "algo.minibatch=8", "algo.critic.lr=0",
                                           "algo.max_grad_norm=1e9", passes), critic_path=model_path)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a head of zeros would leave the body without gradient
        learner.critic.head.weight.copy_(torch.randn(learner.critic.head.weight.shape, generator=g))
    whole = copy.deepcopy(learner.critic)
    rs = rollouts(learner.policy.config.vocab_size)
    seen = []
    learner.critic.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape)))
    b = common.prepare(learner, rs, [1.0, 0.0] * 4)
    mask = b.mask.float()
    values = whole(b.ids, b.attn)  # (8, T - 1), one pass
    m = learner.update(rs, [1.0, 0.0] * 4)
    assert seen == shapes * 2  # the old values' passes, then the minibatch's
    assert m["value/mean"] == pytest.approx(((values * mask).sum() / mask.sum()).item(), abs=1e-5)

    old = (values.detach() + 0.3 * torch.randn(values.shape, generator=g)) * mask
    returns = torch.randn(values.shape, generator=g) * mask
    ppo.value_update(learner, b, old, returns)
    v_clip = old + (values - old).clamp(-0.2, 0.2)
    per_token = 0.5 * torch.maximum((values - returns) ** 2, (v_clip - returns) ** 2)
    assert ((v_clip - returns) ** 2 > (values - returns) ** 2)[b.mask].any()  # some tokens take the clipped term
    (learner.cfg.critic.value_coef * (per_token * mask).sum() / mask.sum()).backward()
    for (name, p), q in zip(learner.critic.named_parameters(), whole.parameters()):
        assert q.grad.abs().max() > 0, name
        assert (p.grad - q.grad).abs().max() <= 1e-5 * q.grad.abs().max(), name  # float32 sums in other orders


def test_ppo_critic_follows_the_device(model_path):
    """PPO's critic sits on the learner's device; its update runs on CPU batches moved there."""
    learner = Learner(model_path, algo_cfg("algo=ppo", "algo.device=cpu", "algo.micro_batch=3"), critic_path=model_path)
    assert all(p.device == learner.device for p in learner.critic.parameters())
    rs = rollouts(learner.policy.config.vocab_size)
    m = learner.update(rs, [1.0, 0.0] * 4)
    assert m["value/loss"] > 0 and m["policy/updates"] > 0
