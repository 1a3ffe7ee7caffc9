"""analysis.bench's pure parts (the benchmarks themselves are run by hand: no timed assertions)."""
import pytest

from analysis import bench


def test_growth_exponents_by_hand():
    # t doubles with x: linear (1); t x4 for x x2: quadratic (2); flat: 0
    assert bench.exponents([1, 2, 4, 8], [1.0, 2.0, 8.0, 8.0]) == pytest.approx([1.0, 2.0, 0.0])


def test_cost_runs_vary_one_axis_around_the_base_work():
    points = bench.cost_points()
    assert len(points) == 4 + 4 + 4 + 2
    for axis, value, args in points:
        work = dict(a.removeprefix("algo.").split("=") for a in args if a.startswith("algo."))
        if axis == "model":
            assert work == {"prompts_per_step": "4", "samples_per_prompt": "4", "max_tokens": "24"}
            continue
        assert args[0] == "policy=tiny_random" and work[axis] == str(value)
        assert {k: v for k, v in work.items() if k != axis} == {k: str(v) for k, v in
                                                                {"prompts_per_step": 16, "samples_per_prompt": 8,
                                                                 "max_tokens": 24}.items() if k != axis}
    assert [a for _, v, a in points if _ == "model"][1][0] == "policy=smollm2_135m_random"
