"""Faults: bad reward values, damaged or interrupted checkpoints (unit level; the killed runs are in
tests/test_kill.py)."""
import errno
import json
import os

import pytest

from rl import checkpoint
from rl.checkpoint import CheckpointError
from rl.cluster import shutdown_ray
from rl.loop import check_scores, drop_nonfinite_groups

NAN, INF = float("nan"), float("inf")
P, T = ["Q:1+2=", "Q:3+4=", "W:abcd="], ["3", "8", "abcd"]


def test_one_finite_score_per_response():
    assert check_scores([1.0, 0.0, 0.5], P, T, "reward 'x'") == 0
    with pytest.raises(ValueError, match=r"reward 'x' returned 2 scores for 3 responses"):
        check_scores([1.0, 0.0], P, T, "reward 'x'")


@pytest.mark.parametrize("bad", [NAN, INF, -INF, None])
def test_nonfinite_score_names_source_and_sample(bad):
    with pytest.raises(ValueError, match=r"reward 'rm' gave 1 non-finite score\(s\) in a batch of 3, e\.g\. .* for "
                                         r"prompt 'Q:3\+4=' -> response '8'; .* reward\.on_nan=skip"):
        check_scores([1.0, bad, 0.5], P, T, "reward 'rm'")


def test_skip_counts_and_gold_may_mark_nan():
    assert check_scores([NAN, INF, 0.5], P, T, "reward 'rm'", on_nan="skip") == 2
    assert check_scores([1.0, 0.0, NAN], P, T, "gold 'rule'", nan_ok=True) == 0  # a verifier's "unverifiable"
    with pytest.raises(ValueError, match=r"gold 'rule' gave 1 non-finite"):
        check_scores([1.0, INF, NAN], P, T, "gold 'rule'", nan_ok=True)


def test_groups_with_a_nonfinite_score_are_dropped_whole():
    rs, proxy, gold = list("abcdef"), [1.0, 0.0, NAN, 1.0, 0.5, 0.5], [1, 2, 3, 4, 5, 6]
    assert drop_nonfinite_groups(rs, proxy, gold, 2) == (list("abef"), [1.0, 0.0, 0.5, 0.5], [1, 2, 5, 6], 1)
    assert drop_nonfinite_groups(rs, proxy, gold, 3) == (list("def"), [1.0, 0.5, 0.5], [4, 5, 6], 1)


def learner_part(content: bytes):
    def save(d):
        os.makedirs(os.path.join(d, "policy"))
        with open(os.path.join(d, "policy", "model.safetensors"), "wb") as f:
            f.write(content)
    return save


def test_save_lists_verifies_and_keeps(tmp_path):
    run = str(tmp_path)
    for step in (2, 4, 6):
        checkpoint.save(run, step, learner_part(bytes([step]) * 1000), {"step": step}, keep=2)
    names = [os.path.basename(c) for c in checkpoint.listing(run)]
    assert names == ["step_000004", "step_000006"]
    manifest = json.loads((tmp_path / "checkpoints" / "step_000006" / "manifest.json").read_text())
    assert manifest["policy/model.safetensors"]["bytes"] == 1000 and set(manifest) == {"policy/model.safetensors", "driver.json"}
    assert checkpoint.resume_point(True, run) == (str(tmp_path / "checkpoints" / "step_000006"), {"step": 6})
    assert checkpoint.resume_point(False, run) is None


def test_unfinished_save_is_never_picked(tmp_path):
    """What a process killed mid-save leaves: a `.tmp` directory, ignored; the next save replaces it."""
    run = str(tmp_path)
    checkpoint.save(run, 2, learner_part(b"x" * 10), {"step": 2}, keep=2)
    tmp = tmp_path / "checkpoints" / "step_000004.tmp"
    tmp.mkdir()
    (tmp / "driver.json").write_text('{"step": 4}')
    assert checkpoint.resume_point(True, run)[1] == {"step": 2}
    checkpoint.save(run, 4, learner_part(b"y" * 10), {"step": 4}, keep=2)
    assert not tmp.exists() and checkpoint.resume_point(True, run)[1] == {"step": 4}


@pytest.mark.parametrize("damage, problem", [
    (lambda f: f.write_bytes(f.read_bytes()[:500]), r"policy/model.safetensors has 500 bytes, 1000 when saved \(truncated\?\)"),
    (lambda f: f.write_bytes(b"\x00" + f.read_bytes()[1:]), r"policy/model.safetensors differs .* corrupted\)"),
    (lambda f: f.unlink(), r"policy/model.safetensors is missing"),
])
def test_damaged_checkpoint_is_a_clear_error_and_the_previous_one_still_resumes(tmp_path, damage, problem):
    run = str(tmp_path)
    for step in (2, 4):
        checkpoint.save(run, step, learner_part(bytes([7]) * 1000), {"step": step}, keep=2)
    newest = tmp_path / "checkpoints" / "step_000004"
    damage(newest / "policy" / "model.safetensors")
    previous = str(tmp_path / "checkpoints" / "step_000002")
    with pytest.raises(CheckpointError, match=rf"checkpoint {newest} is damaged: {problem}; the previous checkpoint "
                                              rf"{previous} is intact: resume from it with resume={previous}"):
        checkpoint.resume_point(True, run)
    assert checkpoint.resume_point(previous, run) == (previous, {"step": 2})
    # saving step 4 again (the run resumed from step 2) replaces the damaged one
    checkpoint.save(run, 4, learner_part(bytes([8]) * 1000), {"step": 4}, keep=2)
    assert checkpoint.resume_point(True, run)[1] == {"step": 4}


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path):
    run = str(tmp_path)
    checkpoint.save(run, 2, learner_part(b"a" * 100), {"step": 2}, keep=2)

    def full(d):  # writes part of the policy, then the disk is full
        learner_part(b"b" * 50)(d)
        raise OSError(errno.ENOSPC, "No space left on device")

    previous = tmp_path / "checkpoints" / "step_000002"
    with pytest.raises(CheckpointError, match=rf"saving checkpoint .*step_000004 failed: \[Errno 28\] No space left on "
                                              rf"device; the previous checkpoint {previous} is intact"):
        checkpoint.save(run, 4, full, {"step": 4}, keep=2)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["step_000002"]
    assert checkpoint.resume_point(True, run)[1] == {"step": 2}
    assert (previous / "policy" / "model.safetensors").read_bytes() == b"a" * 100


def test_resume_from_a_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match=r"resume='/no/such': no such checkpoint directory"):
        checkpoint.resume_point("/no/such", str(tmp_path))


# End to end: a real source that gives NaN (the arith verifier with `unverifiable: nan` marks the
# open-ended "W:" prompts), as the proxy of a short run.
NAN_RUN = ["world=arith_small", "engine=hf", "reward=rule", "reward.unverifiable=nan", "algo.steps=2",
           "algo.prompts_per_step=4", "algo.samples_per_prompt=4", "eval.prompts=8", "eval.every=1"]


@pytest.fixture(scope="module")
def ray_session():
    yield
    shutdown_ray()


def test_a_nan_reward_stops_the_run_naming_source_and_sample(tmp_path, ray_session):
    from rl.loop import run
    from tests.test_loop import config

    with pytest.raises(ValueError, match=r"reward 'rule' gave \d+ non-finite score\(s\) in a batch of \d+, e\.g\. nan for "
                                         r"prompt 'W:[a-z]{4}=' -> response .*reward\.on_nan=skip"):
        run(config(*NAN_RUN), str(tmp_path))


def test_on_nan_skip_leaves_those_groups_out_and_counts_them(tmp_path, ray_session):
    from rl.loop import data_seed, run
    from rl.tasks import make_task
    from tests.test_loop import config

    cfg = config(*NAN_RUN, "reward.on_nan=skip")
    run(cfg, str(tmp_path))
    task = make_task(cfg.task)
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["faults/nan_groups"] for r in records[1:]) > 0
    for r in records[1:]:
        prompts = [it.text for it in task.items("train", 4, data_seed(cfg.seed, r["step"] - 1), distinct=False)]
        open_ended = sum(not p.startswith("Q:") for p in prompts)  # what the verifier cannot score
        assert r["faults/nan_groups"] == open_ended, (r["step"], prompts)
        assert r["reward/proxy"] == r["reward/proxy"]  # finite: only the scored groups were trained on
    assert records[-1]["faults/nonfinite_rewards"] > 0  # eval's open prompts too (left out of eval means)
