import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rl.cluster import omp_env
from worlds.zoo import default_cache_dir
from tests.helpers import train_echo_model

ROOT = Path(__file__).resolve().parent.parent

# The full arith zoo is costly (minutes): tests that need it reuse the user's cache. Everything
# else the suite builds (random models, the reduced zoo, the converted SmolLM2) goes to a cache of
# the suite's own that subprocesses (rl.run, the zoo CLI) inherit through the environment. Each build
# there is keyed by its recipe and source code, as in the user's cache, so it is kept for the next
# session (a fresh build: ~3 min of the suite); RLHF_TESTBED_TEST_CACHE moves it, deleting it is safe.
# Tests that check what a build or run writes into a cache give it a cache of their own (tmp_path).
# Read once, before the override below: pytest-xdist's workers inherit the override, and would take the
# suite's cache for the user's (and build the full zoo there).
USER_CACHE = os.environ.setdefault("RLHF_TESTBED_USER_CACHE", default_cache_dir())
TEST_CACHE = os.environ.get("RLHF_TESTBED_TEST_CACHE") or os.path.join(USER_CACHE, "tests")
os.environ["RLHF_TESTBED_CACHE"] = TEST_CACHE


# modules whose tests start Ray, an engine, a CLI process or a zoo build: `make test-quick` skips them
E2E = {"test_cluster", "test_config", "test_engines", "test_faults", "test_gpu_check", "test_kill", "test_lora", "test_loop",
       "test_placement", "test_safety", "test_smol", "test_smol_rewards", "test_smol_urpo", "test_static", "test_studies",
       "test_sync", "test_tasks_loop", "test_urpo", "test_zoo", "test_zoo_full"}


# `make test` runs the suite in two pytest-xdist workers: one test process alone kept the 2 cores 65-70%
# busy (imports, start-ups, single-threaded Python between torch's ops). `--dist loadgroup` with no group
# marked hands the next test to a worker once it has two or fewer waiting; `--dist worksteal` (each worker
# starts on half the tests in file order) measured 4-15% slower (BENCHMARKS.md).

# Torch's OpenMP threads in the test processes spin as briefly as the Ray actors' do (the default
# cluster.omp_spincount): two workers share the cores. Inherited by the workers, which pytest-xdist starts
# after this import.
for key, value in omp_env(OmegaConf.load(ROOT / "conf" / "cluster" / "local.yaml")).items():
    os.environ.setdefault(key, value)


def pytest_collection_modifyitems(items):
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in E2E:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def user_cache():
    return USER_CACHE


@pytest.fixture(scope="session")
def echo_model(tmp_path_factory):
    return str(train_echo_model(tmp_path_factory.mktemp("echo") / "model"))
