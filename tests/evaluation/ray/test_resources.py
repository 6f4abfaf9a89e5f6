"""Ray workers that the cluster can never place fail at once, naming what is missing; workers
that could be placed but do not start (their resources are busy) fail after the start-up
timeout, naming the workers still pending. One local Ray cluster of 2 CPUs and 0 GPUs serves
the module."""

from __future__ import annotations

import time

import pytest

import layerfast as lf
from layerfast.errors import UsageError
from layerfast.evaluation.ray import pool as ray_pool
from tests.conftest import make_task

ray = pytest.importorskip("ray", reason="pip install 'layerfast[ray]'")


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs and no GPU, shut down after the module."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.timeout(90)  # the old code waited READY_TIMEOUT (600 s)
def test_gpus_the_cluster_lacks_fail_at_once(cluster, tiny_llama):
    start = time.time()
    with pytest.raises(UsageError) as e:
        ray_pool.RayPool(tiny_llama, 2, threads=1, gpus_per_worker=1)
    text = str(e.value)
    assert time.time() - start < 10
    assert "2 Ray workers (--workers) ask for 1 CPU and 1 GPU each" in text
    assert "the Ray cluster has 2 CPUs and 0 GPUs" in text and "--gpus-per-worker" in text
    assert "\n" not in text
    assert ray.is_initialized()  # the pool did not start this cluster, so it leaves it running


@pytest.mark.timeout(90)
def test_the_game_fails_at_once_too(cluster, tiny_llama):
    start = time.time()
    with pytest.raises(UsageError, match="0 GPUs"):
        lf.Game(tiny_llama, make_task(), progress=False, workers=2, gpus_per_worker=1)
    assert time.time() - start < 10


@pytest.mark.timeout(90)
def test_cpus_the_cluster_lacks_fail_at_once(cluster, tiny_llama):
    with pytest.raises(UsageError) as e:
        ray_pool.RayPool(tiny_llama, 3, threads=1)
    assert "3 Ray workers (--workers) ask for 1 CPU and 0 GPUs each" in str(e.value)
    assert "room for 2" in str(e.value) and "fewer --workers" in str(e.value)


@ray.remote(num_cpus=2)
class Hog:
    """Holds both CPUs of the cluster."""

    def ready(self) -> bool:
        return True


@pytest.mark.timeout(120)
def test_busy_resources_time_out_naming_the_pending_workers(cluster, tiny_llama, monkeypatch):
    hog = Hog.remote()
    ray.get(hog.ready.remote())
    monkeypatch.setattr(ray_pool, "READY_TIMEOUT", 1.0)
    try:
        with pytest.raises(UsageError) as e:
            ray_pool.RayPool(tiny_llama, 2, threads=1)
    finally:
        ray.kill(hog)
    text = str(e.value)
    assert "only 0 of 2 Ray workers could load the model within 1 s" in text
    assert "still pending: worker(s) 0, 1" in text and "0 CPUs and 0 GPUs free" in text
