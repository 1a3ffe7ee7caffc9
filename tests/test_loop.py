"""The online loop end to end on the reduced world: every reward source x {grpo, bon}."""
import json
import re

import pytest
import torch
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rl.cluster import shutdown_ray
from rl.loop import run
from tests.test_config import CONF, run_cli

SOURCES = ["rm_l", "judge", "cdr", "rule", "gold", "rule_plus_judge"]
SMALL = ["world=arith_small", "algo.steps=2", "algo.prompts_per_step=4", "algo.samples_per_prompt=4",
         "eval.prompts=8", "eval.every=1"]


def config(*overrides):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    yield
    shutdown_ray()


def hand_gold(prompt: str, response: str) -> float:
    """The arith world's gold written out again from its definition (worlds/arith/gold.py's docstring):
    the core is the text before the first space or '!'; a sum must be exact; an open answer is 4
    lowercase letters scored by the share of the prompt's 4 letters it uses."""
    core = re.split(r"[ !]", response, maxsplit=1)[0]
    if prompt.startswith("Q:"):
        a, b = prompt[2:-1].split("+")
        return float(core == str(int(a) + int(b)))
    return len(set(prompt[2:-1]) & set(core)) / 4 if re.fullmatch("[a-z]{4}", core) else 0.0


def scalars(run_dir):
    ea = EventAccumulator(str(run_dir / "tb"))
    ea.Reload()
    return {tag: [e.value for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


@pytest.mark.parametrize("reward", SOURCES)
def test_grpo_runs_with_every_reward_source(reward, tmp_path):
    summary = run(config(*SMALL, f"reward={reward}"), str(tmp_path))
    tb = scalars(tmp_path)
    assert "kl/k1" not in tb and "kl/k3" not in tb  # beta 0: no reference pass in the step (eval/kl measures it)
    for tag in ("reward/proxy", "reward/gold", "eval/kl", "policy/clipfrac", "policy/entropy",
                "response/length", "sync/logprob_diff", "perf/step_s", "perf/tokens_per_s", "perf/gen_s",
                "perf/learn_s", "perf/update_s", "perf/sync_s", "eval/reward_gold"):
        assert tag in tb, tag
    # the update inside the learner is part of the driver's wait for it
    assert all(0 < u <= t for u, t in zip(tb["perf/update_s"], tb["perf/learn_s"]))
    assert len(tb["reward/proxy"]) == 2 and len(tb["eval/reward_gold"]) == 3  # before, after step 1, after step 2
    assert max(tb["sync/logprob_diff"]) < 1e-4  # float32 engine: the synced weights are the learner's
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [0, 1, 2]
    assert json.loads((tmp_path / "summary.json").read_text())["reward"] == reward
    assert summary["nodes"]["weight_sync"] == "shm_file"  # one node: driver, engine and learner share /dev/shm
    assert ("reward/parse_failures" in tb) == (reward == "judge")  # the judge counts unparsable verdicts
    samples = sorted((tmp_path / "samples").iterdir())
    assert [p.name for p in samples] == ["step_000000.jsonl", "step_000001.jsonl", "step_000002.jsonl"]
    first, last = ([json.loads(x) for x in p.read_text().splitlines()] for p in (samples[0], samples[-1]))
    assert len(last) == 8 and set(last[0]) == {"prompt", "answer", "response", "proxy", "gold", "kl"}
    # the gold channel is the world's rule, rescored here from the saved texts
    assert summary["gold_initial"] == pytest.approx(sum(hand_gold(r["prompt"], r["response"]) for r in first) / 8)
    assert summary["gold_final"] == pytest.approx(sum(hand_gold(r["prompt"], r["response"]) for r in last) / 8)
    if reward == "gold":
        assert [r["proxy"] for r in last] == [r["gold"] for r in last]


def test_a_fresh_run_in_a_used_directory_logs_only_itself(tmp_path):
    run(config(*SMALL, "reward=gold", "algo.steps=3"), str(tmp_path))
    run(config(*SMALL, "reward=gold"), str(tmp_path))
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [0, 1, 2]
    assert len(scalars(tmp_path)["reward/gold"]) == 2
    assert sorted(p.name for p in (tmp_path / "samples").iterdir())[-1] == "step_000002.jsonl"


def test_warm_actors_serve_the_next_run_as_fresh_ones_would(tmp_path):
    """A finished run parks its actors (rl/warm.py); the next run in the process takes them back: the
    engine (same engine config and policy) reloads the policy's weights, the learner and the reward
    actor run their constructors again. Learning must not tell the difference: the same metrics as a
    run on fresh actors (cluster.keep_warm=false takes nothing): the warm run's reward model (rm_l,
    where CDR ran before) and learning rate are the ones it asked for, not the previous run's."""
    runs = {}
    for name, extra in (("a", ["reward=cdr", "algo.lr=3e-4"]), ("warm", []), ("fresh", ["cluster.keep_warm=false"])):
        summary = run(config(*SMALL, "reward=rm_l", "seed=3", *extra), str(tmp_path / name))
        lines = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        runs[name] = summary["warm"], [{k: v for k, v in x.items() if not k.startswith("perf/")} for x in lines]
    assert runs["warm"][0] == ["engine", "learner", "proxy"] and runs["fresh"][0] == []
    assert runs["warm"][1] == runs["fresh"][1] != runs["a"][1]
    assert len(runs["fresh"][1]) == 3 and "sync/logprob_diff" in runs["fresh"][1][1]


@pytest.mark.parametrize("reward", SOURCES)
def test_bon_runs_with_every_reward_source(reward, tmp_path):
    summary = run(config("world=arith_small", "algo=bon", "algo.n_max=8", "eval.prompts=8", f"reward={reward}"),
                  str(tmp_path))
    curve = json.loads((tmp_path / "bon_curve.json").read_text())
    assert [row["n"] for row in curve] == [1, 2, 4, 8]
    assert curve[0]["kl/bon"] == 0.0 and curve[0]["kl/bon_exact"] == 0.0  # best-of-1 is the base
    # kl_final is the exact KL over the pools; the analytic log 8 - 7/8 is its bound (Beirami et al.
    # 2024), strict here: a pool of 8 is discrete (8 distinct values give 1.163 < 1.204)
    assert summary["kl_bound_final"] == pytest.approx(2.0794415 - 7 / 8)
    assert summary["kl_final"] == curve[-1]["kl/bon_exact"] and 0 <= summary["kl_final"] < summary["kl_bound_final"]
    # E[proxy of the proxy-argmax] can only grow with n
    assert all(a["reward/proxy"] <= b["reward/proxy"] + 1e-9 for a, b in zip(curve, curve[1:]))
    tb = scalars(tmp_path)
    assert len(tb["reward/gold"]) == 4 and len(tb["kl/bon"]) == 4 and len(tb["kl/bon_exact"]) == 4


PG_TAGS = ("policy/loss", "policy/clipfrac", "policy/approx_kl", "policy/entropy", "kl/k1", "kl/coef",
           "reward/gold", "sync/logprob_diff")


@pytest.mark.parametrize("algo, extra_tags", [
    ("ppo", ("value/loss", "value/explained_variance", "value/clipfrac", "value/mean")),
    ("rloo", ()),
    ("reinforce_pp", ()),
])
def test_pg_algos_run_and_log(algo, extra_tags, tmp_path):
    run(config(*SMALL, f"algo={algo}", "reward=rm_l", "algo.kl.coef=0.05"), str(tmp_path))
    tb = scalars(tmp_path)
    for tag in PG_TAGS + extra_tags:
        assert len(tb[tag]) == 2, tag
    assert tb["kl/coef"] == pytest.approx([0.05, 0.05])  # fixed controller
    assert max(tb["sync/logprob_diff"]) < 1e-4


def test_dapo_resampling_trains_only_groups_with_variance(tmp_path):
    """dynamic_sampling=resample against the rule verifier (0/1 on sums, one constant for every open
    prompt: many groups without variance). The learner sees no zero-variance group whenever the
    driver found any group with variance, and every drawn group is accounted for: kept + discarded +
    surplus = rounds x prompts_per_step. TIS and T = 0.7 ride along (float32: weights ~1)."""
    run(config(*SMALL, "reward=rule", "algo.steps=3", "algo.dynamic_sampling=resample", "algo.max_sample_rounds=3",
               "algo.temperature=0.7", "algo.tis_cap=2.0"), str(tmp_path))
    tb = scalars(tmp_path)
    rows = list(zip(tb["dynamic/groups"], tb["dynamic/discarded_groups"], tb["dynamic/surplus_groups"],
                    tb["dynamic/rounds"], tb["grpo/zero_var_groups"]))
    assert len(rows) == 3 and sum(r[1] for r in rows) > 0, rows
    for groups, discarded, surplus, rounds, zero_var in rows:
        assert groups + discarded + surplus == 4 * rounds and 1 <= rounds <= 3
        assert groups == 4 or rounds == 3  # short of groups only once the round cap is reached
        if groups:
            assert zero_var == 0.0
    assert tb["policy/tis_weight"] == pytest.approx([1.0] * 3, abs=1e-3)


def test_ppo_target_kl_stops_the_step_early(tmp_path):
    """16 rollouts = one minibatch, 2 epochs: the first update starts on-policy (approx KL 0), the
    second sees KL > target and is skipped. Dual-clip and the entropy bonus ride along."""
    run(config(*SMALL, "algo=ppo", "algo.target_kl=1e-9", "algo.dual_clip=3.0", "algo.entropy_coef=0.01"),
        str(tmp_path))
    tb = scalars(tmp_path)
    assert tb["policy/updates"] == [1.0, 1.0] and tb["policy/early_stopped"] == [1.0, 1.0]
    assert tb["policy/approx_kl"] == pytest.approx([0.0, 0.0], abs=1e-8)  # only the on-policy minibatch ran


def test_adaptive_controller_follows_the_measured_kl(tmp_path):
    """Wiring: each step's beta is the Ziegler update of the previous beta by the previous step's
    logged per-sequence k1 (B = 16 sequences a step)."""
    from rl.losses import adaptive_kl_coef

    run(config(*SMALL, "algo.steps=4", "algo.kl.coef=0.2", "algo.kl.controller=adaptive", "algo.kl.target=0.5",
               "algo.kl.horizon=40"), str(tmp_path))
    tb = scalars(tmp_path)
    beta, kl = tb["kl/coef"], tb["kl/k1"]
    assert beta[0] == pytest.approx(0.2)
    for t in range(1, 4):
        assert beta[t] == pytest.approx(adaptive_kl_coef(beta[t - 1], kl[t - 1], 0.5, 40, 16), rel=1e-6)
    assert len(set(beta)) > 1


def test_critic_from_a_reward_model_starts_at_its_scores():
    """critic.init=reward: the critic's value of a prefix equals the RM's score of that text."""
    from worlds import zoo
    from rewards.rm import RewardModel
    from rl.algos.ppo import Critic, critic_path

    cfg = config("world=arith_small", "algo=ppo", "reward=rm_l", "algo.critic.init=reward")
    zoo_dir = zoo.ensure(cfg.world, cfg.cache_dir)
    path = critic_path(cfg, str(zoo_dir / "base"), zoo_dir)
    rm, critic = RewardModel(path), Critic(path)
    text = "Q:12+34=46" + rm.tokenizer.eos_token
    ids = torch.tensor([rm.tokenizer(text, add_special_tokens=False).input_ids + [0]])
    value = critic(ids, torch.ones_like(ids))[0, -1]
    assert value.item() == pytest.approx(rm.score(["Q:12+34="], ["46"])[0], abs=1e-5)


@pytest.mark.parametrize("args, message", [
    (["algo.name=ppo9"], "unknown algorithm 'ppo9' (config key algo.name)"),
    (["algo.kl.placement=both"], "algo.kl.placement='both'; expected one of: reward, loss"),
    (["algo.kl.controller=adaptive", "algo.kl.target=0"], "algo.kl.controller=adaptive needs algo.kl.target > 0"),
    (["algo=ppo", "algo.critic.init=reward", "reward=cdr"], "algo.critic.init=reward needs a reward model"),
    (["algo=rloo", "algo.samples_per_prompt=1"], "RLOO's leave-one-out baseline needs >= 2"),
    (["algo.samples_per_prompt=1"], "GRPO's group baseline needs >= 2 samples per prompt"),
    (["algo.kl.estimator=k1", "algo.kl.coef=0.1"], "k1 with algo.kl.placement=loss has zero expected gradient"),
    (["algo.dynamic_sampling=always"], "algo.dynamic_sampling='always'; expected false, mask or resample"),
    (["algo.temperature=0"], "algo.temperature=0: a policy-gradient run samples at a temperature > 0"),
    (["reward.type=oracle"], "unknown reward type 'oracle' (config key reward.type)"),
    (["reward=rm_l", "reward.path=/no/rm"], "model path '/no/rm' (config key reward.path) does not exist"),
])
def test_bad_loop_config_is_one_clear_error(args, message, tmp_path):
    refused(tmp_path, args, message)


def refused(run_dir, args, message) -> None:
    """A run on the reduced world with `args` is refused up front with `message`. In this process (a CLI
    process costs seconds of imports each): the CLI prints the same error as one line and exits 2
    (test_config's bad-input tests and the one below go through it)."""
    with pytest.raises(ValueError) as e:
        run(config("world=arith_small", *args), str(run_dir))
    assert message in str(e.value)
    assert not (run_dir / "metrics.jsonl").exists()  # refused before anything ran


def test_an_unknown_job_is_one_clear_error_from_the_cli(tmp_path):
    out = run_cli(tmp_path, "world=arith_small", "job=sleep")
    assert out.returncode == 2 and "unknown job 'sleep' (config key job)" in out.stderr and "Traceback" not in out.stderr


def test_grpo_on_gold_raises_gold(tmp_path, user_cache):
    """The default world, reward=gold: 20 GRPO steps of 16 prompts x 8 samples, where the gain already
    shows. Measured (zoo arith-004cbc8418fa) 0.284 -> 0.401 / 0.476 / 0.499 mean gold on 200 eval
    prompts at steps 40 / 80 / 120; on another machine's build (arith-06cbe50bac21) 0.179 -> 0.258 /
    0.282 / 0.341 at 10 / 20 / 40 (the zoo's training runs on the CPU's kernels). Not flaky:
    the run is deterministic (seeded sampling in the engine, one CPU learner) and the evaluation
    uses the same sampling seed at every point, so before/after differ only by the policy.
    """
    summary = run(config("reward=gold", "algo.steps=20", "eval.every=20", f"cache_dir={user_cache}"), str(tmp_path))
    assert summary["gold_final"] >= summary["gold_initial"] + 0.04, summary
    assert summary["kl_final"] > 0


@pytest.mark.parametrize("algo", [
    [],
    # PPO with the adaptive controller: the critic, its optimizer and beta must come back too
    ["algo=ppo", "algo.kl.coef=0.1", "algo.kl.controller=adaptive", "algo.kl.target=0.5", "algo.kl.horizon=40"],
    # asynchronous generation: step 3's rollouts were generated during step 2's update, by the
    # weights before it; the checkpoint keeps them, so the resumed step 3 trains on the same ones
    ["engine=hf", "algo.async_generation=true"],
], ids=["grpo", "ppo_adaptive", "grpo_async"])
def test_resume_continues_at_the_right_step(algo, tmp_path):
    """Interrupted after step 3 with a checkpoint at step 2: the resumed run repeats step 3, ends at
    step 4 with the same numbers as an uninterrupted run, and its logs hold each step once."""
    common = [*SMALL, "algo.steps=4", "checkpoint.every=2", "eval.every=2", *algo]
    for d in "ab":
        (tmp_path / d).mkdir()
    full = run(config(*common), str(tmp_path / "a"))
    run(config(*common, "stop_after=3"), str(tmp_path / "b"))
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["step_000002"]
    resumed = run(config(*common, "resume=true"), str(tmp_path / "b"))
    lines = {d: [json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()] for d in "ab"}
    assert [x["step"] for x in lines["b"]] == [0, 1, 2, 3, 4]
    for x, y in zip(lines["a"], lines["b"]):
        for key in ("reward/proxy", "reward/gold", "policy/entropy", "kl/k1", "kl/coef", "value/loss", "eval/reward_gold",
                    "async/staleness", "async/logprob_gap"):
            assert x.get(key) == pytest.approx(y.get(key), abs=1e-6), (x["step"], key)
    assert resumed["steps"] == full["steps"] == 4
    assert resumed["gold_final"] == pytest.approx(full["gold_final"]) and resumed["gold_initial"] == full["gold_initial"]
    assert scalars(tmp_path / "b")["reward/gold"] == pytest.approx(scalars(tmp_path / "a")["reward/gold"])
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["step_000002", "step_000004"]
    # a checkpoint's policy/ is a whole model directory: its tokenizer is the starting policy's
    from transformers import AutoTokenizer

    ckpt = AutoTokenizer.from_pretrained(tmp_path / "b" / "checkpoints" / "step_000004" / "policy")
    start = AutoTokenizer.from_pretrained(full["policy"])
    assert ckpt("Q:12+34=W:kq").input_ids == start("Q:12+34=W:kq").input_ids and len(ckpt) == len(start)


@pytest.mark.parametrize("algo, steps, gain", [
    # measured (zoo arith-004cbc8418fa): rloo (token-mean loss) 0.284 -> 0.500 at 120; on another build
    # (arith-06cbe50bac21) rloo 0.179 -> 0.245 / 0.281 / 0.335 / 0.374 at 10 / 20 / 30 / 60, ppo 0.179 ->
    # 0.339 / 0.380 / 0.465 at 10 / 20 / 40: the gains show well before these step counts
    ("ppo", 20, 0.06),
    ("rloo", 30, 0.04),
])
def test_pg_algos_on_gold_raise_gold(algo, steps, gain, tmp_path, user_cache):
    """The default world, reward=gold, the algorithm's default config for `steps` steps (deterministic:
    seeded sampling, one CPU learner, the same evaluation draws before and after)."""
    summary = run(config(f"algo={algo}", "reward=gold", f"algo.steps={steps}", f"eval.every={steps}",
                         "checkpoint.every=0", f"cache_dir={user_cache}"), str(tmp_path))
    assert summary["gold_final"] >= summary["gold_initial"] + gain, summary


def test_kl_in_the_reward_holds_the_policy_near_the_reference(tmp_path, user_cache):
    """PPO against rm_l for 10 steps, same seeds, beta 0 vs 0.5 (kl.placement=reward, per-token k1).
    Measured on this machine's zoo: summed KL per eval sequence 2.27 vs 0.65 at 10 steps (7.06 vs 1.04
    at 20)."""
    kl = {}
    for beta in (0.0, 0.5):
        (tmp_path / str(beta)).mkdir()
        kl[beta] = run(config("algo=ppo", "reward=rm_l", "algo.steps=10", "eval.every=10", "checkpoint.every=0",
                              f"algo.kl.coef={beta}", f"cache_dir={user_cache}"), str(tmp_path / str(beta)))["kl_final"]
    assert kl[0.5] < 0.5 * kl[0.0], kl


def test_text_only_rewards_are_scored_in_the_driver_and_model_rewards_in_actors():
    from omegaconf import OmegaConf

    from rl.loop import _RewardActor, in_process

    c = OmegaConf.create
    assert in_process(c({"type": "arith_gold"})) and in_process(c({"type": "math_verify"}))
    assert not in_process(c({"type": "rm"})) and not in_process(c({"type": "cdr"}))
    assert in_process(c({"type": "combination", "parts": [{"type": "arith_rule"}, {"type": "length"}]}))
    assert not in_process(c({"type": "combination", "parts": [{"type": "arith_rule"}, {"type": "lora_judge"}]}))
    local = _RewardActor(c({"name": "len", "type": "length", "unit": "chars"}), None, 1, local=True)
    assert local.score.remote(["p", "q"], ["abc", "hello"]) == ([3.0, 5.0], {})  # answered at once, no actor


def test_async_generation_trains_on_rollouts_of_the_weights_before_the_update(tmp_path):
    """algo.async_generation: step 2's rollouts are generated during step 1's update, so by the base
    weights. Checked independently: the base policy in a local engine, given step 2's prompts and
    seed, writes texts whose hand-computed gold mean and mean length are the run's step-2 ones. Steps after
    the first are marked stale, their learner-engine gap is the update (not a sync fault), and each
    evaluation checks the sync instead."""
    from policies.engine import Sampling, make_engine
    from rl.loop import data_seed
    from rl.tasks import make_task

    cfg = config(*SMALL, "engine=hf", "algo.steps=3", "eval.every=3", "algo.async_generation=true")
    summary = run(cfg, str(tmp_path))
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["async/staleness"] for r in rows[1:]] == [0.0, 1.0, 1.0]
    assert rows[1]["sync/logprob_diff"] < 1e-4  # the first step's rollouts are fresh: checked as always
    assert all(r["async/logprob_gap"] > 1e-3 for r in rows[2:])  # lr 1e-4 moved the weights
    assert all(r["eval/sync_logprob_diff"] < 1e-4 for r in rows if "eval/reward_gold" in r)
    items = make_task(cfg.task).items("train", 4, data_seed(cfg.seed, 1), distinct=False)
    engine = make_engine("hf", summary["policy"])
    rs = engine.generate([it.engine_prompt for it in items], Sampling(n=4, temperature=1.0, max_tokens=cfg.algo.max_tokens,
                                                                       seed=cfg.seed * 100_003 + 1))
    gold = [hand_gold(items[r.prompt_index].text, r.text) for r in rs]
    assert rows[2]["reward/gold"] == pytest.approx(sum(gold) / len(gold))
    assert rows[2]["response/length"] == pytest.approx(sum(len(r.completion_ids) for r in rs) / len(rs))


def test_a_sync_left_running_is_waited_for_before_the_next_write():
    """`_sync(wait=False)` (asynchronous generation) returns before the engine has loaded, and the next
    sync waits for that load before the learner rewrites the one weights file the engine reads; the
    load times come back one sync late, the last at `_finish_sync`. A stand-in engine and learner record
    the order of the calls."""
    from types import SimpleNamespace

    from rl.loop import _finish_sync, _sync

    events, loads = [], iter([0.1, 0.2, 0.3])

    def write(path):
        events.append(f"write {path}")
        return path

    learner = SimpleNamespace(write_weights=SimpleNamespace(remote=write))

    class Engine:
        def submit_load(self, weights):
            n = sum(e.startswith("submit") for e in events) + 1
            events.append(f"submit {n}")
            seconds = next(loads)
            return lambda: events.append(f"wait {n}") or seconds

    ctx = SimpleNamespace(engine=Engine(), sync_path="/dev/shm/w", pending_sync=None)
    assert _sync(ctx, learner, wait=False) is None  # nothing loaded before the first
    assert events == ["write /dev/shm/w", "submit 1"]
    assert _sync(ctx, learner, wait=False) == 0.1
    assert events[2:] == ["wait 1", "write /dev/shm/w", "submit 2"]
    assert _finish_sync(ctx) == 0.2 and events[5:] == ["wait 2"] and ctx.pending_sync is None
    assert _finish_sync(ctx) is None
    assert _sync(ctx, learner) == 0.3 and events[6:] == ["write /dev/shm/w", "submit 3", "wait 3"]
