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


@pytest.fixture(scope="session")
def user_cache():
    return USER_CACHE


@pytest.fixture(scope="session")
def echo_model(tmp_path_factory):
    return str(train_echo_model(tmp_path_factory.mktemp("echo") / "model"))
