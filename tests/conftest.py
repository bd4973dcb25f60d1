"""Fixtures shared by several test modules."""

import pytest


@pytest.fixture(scope="module")
def ray_local():
    """A local 2-CPU Ray for one test module (started per module so modules stay independent)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
