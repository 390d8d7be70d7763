"""The accelerator path on a machine without one: the extras that give JAX a GPU or TPU, the cluster
config that installs them, `deeperbench doctor`, and the GPU check's dry run."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from importlib import metadata

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = pathlib.Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "harness"]


def _extra(name: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["optional-dependencies"][name]]


def test_cuda_extra_pairs_jax_with_the_installed_jaxlib_and_torchs_cuda_major():
    (jax_req,) = _extra("cuda")
    assert jax_req.name == "jax"
    assert jax_req.specifier.contains(Version(metadata.version("jaxlib"))), (jax_req, metadata.version("jaxlib"))
    (cuda_extra,) = jax_req.extras
    torch_cuda = __import__("torch").version.cuda
    if torch_cuda is None:
        pytest.skip("this torch is a CPU build: no CUDA major to match")
    assert cuda_extra == f"cuda{torch_cuda.split('.')[0]}", (cuda_extra, torch_cuda)


def test_tpu_extra_is_jax_tpu_in_the_installed_range():
    (jax_req,) = _extra("tpu")
    assert jax_req.name == "jax" and jax_req.extras == {"tpu"}
    assert jax_req.specifier.contains(Version(metadata.version("jax")))


def test_cluster_config_installs_the_extra_of_each_accelerator_node_type():
    types = yaml.safe_load((ROOT / "cluster.yaml").read_text())["available_node_types"]
    installs = {name: " ".join(t.get("worker_setup_commands", [])) for name, t in types.items()}
    gpu = [n for n, t in types.items() if t["resources"].get("GPU")]
    tpu = [n for n, t in types.items() if t["resources"].get("TPU")]
    assert gpu and tpu
    assert all("deeperbench[cuda]" in installs[n] for n in gpu), installs
    assert all("deeperbench[tpu]" in installs[n] for n in tpu), installs


def _cli(*args: str, cwd: pathlib.Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=os.environ | {"PYTHONPATH": str(ROOT)}
    )


def test_doctor_here_lists_versions_and_devices_and_exits_0():
    result = _cli("doctor")
    assert result.returncode == 0, result.stderr
    for field in ("python", "torch", "jax", "ray", "torch devices", "jax devices"):
        assert field in result.stdout, result.stdout


def test_doctor_says_plainly_there_is_no_gpu_and_what_a_gpu_sweep_needs():
    result = _cli("doctor", "sweeps/device_roofline.gpu.yaml")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "JAX sees no GPU" in result.stdout and "deeperbench[cuda]" in result.stdout, result.stdout
    assert "torch sees no GPU" in result.stdout, result.stdout


def test_doctor_passes_a_cpu_sweep():
    result = _cli("doctor", "sweeps/device_roofline.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "available" in result.stdout


def test_gpu_check_dry_run_plans_every_workload_on_cuda_and_writes_nothing(tmp_path):
    out = tmp_path / "gpu-check"
    result = subprocess.run(
        [str(ROOT / "tools" / "gpu-check.sh"), "--dry-run", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"DEEPERBENCH": " ".join(CLI), "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "JAX sees no GPU" in result.stdout
    import workloads

    for name in workloads.names():
        assert name in result.stdout, name
    assert "cuda" in result.stdout
    assert not out.exists()


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_run_of_a_gpu_sweep_on_a_host_without_gpu_exits_2_before_any_trial(executor, tmp_path):
    out = tmp_path / "out"
    result = _cli("run", "sweeps/device_roofline.gpu.yaml", "--executor", executor, "--out", str(out))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "sees no GPU" in lines[0] and "deeperbench doctor" in lines[0], result.stderr
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_doctor_describes_every_node_of_a_cluster_and_its_ray_resources(tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1, resources={"probe": 2})
        cluster.wait_for_nodes()
        result = subprocess.run(
            [*CLI, "doctor", "sweeps/device_roofline.gpu.yaml", "--address", cluster.address],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=280,
            env=os.environ | {"PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"},
        )
    finally:
        cluster.shutdown()
    assert result.returncode == 1, result.stdout + result.stderr  # no node has a GPU
    assert result.stdout.count("ray resources") == 2, result.stdout
    assert "probe=2" in result.stdout and "JAX sees no GPU" in result.stdout, result.stdout
