"""Shared fixtures: a fresh random seed per run (ZORO_TEST_SEED=<seed> replays one), shown in
the header and with every failure, as tests/support/random.h does for the C++ tests."""

import os
import random

import pytest

_SEED = int(os.environ.get("ZORO_TEST_SEED") or random.SystemRandom().randrange(1 << 31))


def pytest_report_header(config):
    return f"ZORO_TEST_SEED={_SEED}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        report.sections.append(("zoro", f"replay with ZORO_TEST_SEED={_SEED}"))


@pytest.fixture
def seed(request):
    """The run's seed, varied per test so that tests do not share inputs."""
    return (_SEED + sum(map(ord, request.node.name))) % (1 << 31)


@pytest.fixture
def rng(seed):
    np = pytest.importorskip("numpy")
    return np.random.default_rng(seed)
