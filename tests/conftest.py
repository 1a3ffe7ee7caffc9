import os
import shutil
import tempfile

import pytest

from worlds.zoo import default_cache_dir
from tests.helpers import train_echo_model

# The full arith zoo is costly (minutes): tests that need it reuse the user's cache. Everything
# else the suite builds (random models, the reduced zoo) goes to a throw-away cache that
# subprocesses (rl.run, the zoo CLI) inherit through the environment.
USER_CACHE = default_cache_dir()
TEST_CACHE = tempfile.mkdtemp(prefix="rlhf-testbed-tests-")
os.environ["RLHF_TESTBED_CACHE"] = TEST_CACHE


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(TEST_CACHE, ignore_errors=True)


# modules whose tests start Ray, an engine, a CLI process or a zoo build: `make test-quick` skips them
E2E = {"test_cluster", "test_config", "test_engines", "test_faults", "test_gpu_check", "test_kill", "test_lora", "test_loop",
       "test_placement", "test_safety", "test_smol", "test_smol_rewards", "test_smol_urpo", "test_static", "test_studies",
       "test_sync", "test_tasks_loop", "test_urpo", "test_zoo", "test_zoo_full"}


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
