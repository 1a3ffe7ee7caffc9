"""Placement of the engine and learner actors: the bundles of each layout, and a real two-node Ray
cluster on this machine (ray.cluster_utils.Cluster: a head and a second node, each its own raylet,
the second with a GPU resource that Ray schedules but no CUDA behind it) on which short runs land
their actors where the config says."""
import pytest
import ray

from rl.cluster import shutdown_ray
from rl.placement import bundles
from tests.test_loop import config


def test_bundles_of_each_layout():
    # 2 engine replicas of (1 CPU, 0.5 GPU) and a learner of (0.5 CPU, 0.5 GPU)
    assert bundles("colocate", 2, (1, 0.5), (0.5, 0.5)) == ([{"CPU": 2.5, "GPU": 1.5}], [0, 0], 0)
    assert bundles("split", 2, (1, 0.5), (0.5, 0)) == ([{"CPU": 1.0, "GPU": 0.5}, {"CPU": 1.0, "GPU": 0.5}, {"CPU": 0.5}],
                                                       [0, 1], 2)
    assert bundles("split", 1, (1, 0), None) == ([{"CPU": 1.0}], [0], None)  # best-of-n: no learner
    assert bundles("none", 2, (1, 0), (0.5, 0)) == ([], [None, None], None)
    with pytest.raises(ValueError, match=r"cluster.placement='spread'; expected one of: none, colocate, split"):
        bundles("spread", 1, (1, 0), None)


@pytest.fixture(scope="module")
def two_nodes():
    """head: 2 CPUs, no GPU; second node: 2 CPUs and 1 GPU."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        shutdown_ray()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 0,
                                                            "object_store_memory": 300 * 2**20})
    gpu_node = cluster.add_node(num_cpus=2, num_gpus=1, object_store_memory=300 * 2**20)
    cluster.wait_for_nodes()
    yield cluster, cluster.head_node.node_id, gpu_node.node_id
    shutdown_ray()
    cluster.shutdown()


def run_on(cluster, tmp_path, *overrides):
    from rl.loop import run

    return run(config("world=arith_small", "engine=hf", "algo.steps=2", "algo.prompts_per_step=4",
                      "algo.samples_per_prompt=4", "eval.prompts=8", "eval.every=2", "checkpoint.every=0",
                      "cluster=existing", f"cluster.address={cluster.address}", *overrides), str(tmp_path))


def test_colocate_puts_engine_and_learner_on_the_gpu_node(two_nodes, tmp_path):
    cluster, head, gpu = two_nodes
    s = run_on(cluster, tmp_path, "cluster.placement=colocate", "cluster.placement_strategy=STRICT_PACK",
               "engine.num_gpus=0.5", "cluster.learner_gpus=0.5", "algo.device=cpu")
    assert s["nodes"] == {"engine": [gpu], "learner": gpu,  # the only node with a GPU for the one bundle
                          "weight_sync": "object_store"}  # this driver runs on the head: no shared /dev/shm file


def test_split_spreads_them_over_both_nodes_and_syncs_across(two_nodes, tmp_path):
    import json

    cluster, head, gpu = two_nodes
    s = run_on(cluster, tmp_path, "cluster.placement=split", "cluster.placement_strategy=STRICT_SPREAD",
               "engine.num_gpus=1", "cluster.learner_gpus=0")
    assert s["nodes"] == {"engine": [gpu], "learner": head, "weight_sync": "object_store"}
    # the weights went from one node to the other (object store) and the engine serves them
    steps = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()][1:]
    assert len(steps) == 2 and max(r["sync/logprob_diff"] for r in steps) < 1e-4


def test_a_layout_the_cluster_cannot_hold_is_a_clear_error(two_nodes, tmp_path):
    cluster, _, _ = two_nodes
    with pytest.raises(RuntimeError, match=r"cluster.placement=split \(STRICT_SPREAD\) asks Ray for the bundles "
                                           r"\[\{'CPU': 1.0\}, \{'CPU': 1.0\}, \{'CPU': 1.0\}\].*too few nodes"):
        run_on(cluster, tmp_path, "cluster.placement=split", "cluster.placement_strategy=STRICT_SPREAD",
               "engine.replicas=2", "engine.start_timeout_s=10")


def test_a_local_run_starts_a_ray_of_its_own_beside_a_running_cluster(two_nodes):
    from rl.cluster import init_ray

    cluster, _, _ = two_nodes
    if ray.is_initialized():
        shutdown_ray()
    # cluster.address: null. Ray's own default would join the last Ray started on this machine (this
    # cluster) and refuse num_cpus there.
    init_ray(config().cluster)
    try:
        assert ray.get_runtime_context().gcs_address != cluster.address
        assert ray.cluster_resources()["CPU"] == 2 and len(ray.nodes()) == 1  # cluster/local: 2, not 2 + 2
    finally:
        shutdown_ray()
