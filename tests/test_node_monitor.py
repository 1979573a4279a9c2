"""Node monitors without Ray: what a heartbeat measures on this machine, NVML handled when absent,
and the shaping of NVML figures (plain dicts; no fake GPUs pretending to be hardware)."""

import importlib.util
import json
import sys

import pytest

from actors.node_monitor import GpuProbe, NetRate, collect_node, heartbeat
from supervisor.cluster import ClusterState, GPU_STATUS_KEYS, shape_gpu, shape_heartbeat


def test_collect_node_measures_this_machine():
    net = NetRate()
    collect_node(net)  # primes cpu_percent and the network counters
    rep = collect_node(net)
    assert 0.0 <= rep["cpu_percent"] <= 100.0
    assert 0.0 < rep["memory_percent"] < 100.0 and rep["memory_total"] > rep["memory_used"] > 0
    assert 0.0 <= rep["disk_percent"] <= 100.0
    assert rep["net_sent_bytes_per_s"] is not None and rep["net_sent_bytes_per_s"] >= 0
    assert rep["cpu_count"] >= 1 and rep["hostname"]


def test_gpu_probe_without_the_library(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    probe = GpuProbe()
    assert probe.sample() == [] and "pynvml not installed" in probe.error
    probe.close()


@pytest.mark.skipif(importlib.util.find_spec("pynvml") is None, reason="nvidia-ml-py not installed")
def test_gpu_probe_with_the_library_on_this_machine():
    """The real library against the real machine: with no NVIDIA driver (CI, this box) it must say so
    and return []; on a GPU machine every GPU comes back with the interface keys."""
    probe = GpuProbe()
    try:
        gpus = probe.sample()
        if probe.nvml is None or probe.count == 0:
            assert gpus == [] and probe.error
        else:
            assert len(gpus) == probe.count
            for g in map(shape_gpu, gpus):
                assert set(GPU_STATUS_KEYS) <= set(g)
                assert g["memory_total"] and g["memory_total"] > 0
    finally:
        probe.close()


def test_heartbeat_on_a_machine_without_gpus_is_json_and_shapes_cleanly():
    rep = heartbeat("node-a", "10.0.0.1", GpuProbe(), NetRate())
    json.dumps(rep)  # travels as plain data
    hb = shape_heartbeat(rep)
    assert hb["node_id"] == "node-a" and hb["address"] == "10.0.0.1"
    if not rep["gpus"]:
        assert hb["gpus"] == [] and hb["gpu_error"]


def test_shape_gpu_converts_nvml_units_and_tolerates_gaps():
    raw = {"index": 0, "name": b"NVIDIA H100 80GB HBM3", "uuid": "GPU-1", "utilization_gpu": 87,
           "utilization_memory": 40, "memory_used": 40 * 2**30, "memory_total": 80 * 2**30, "temperature": 64,
           "temperature_slowdown": 87, "temperature_shutdown": 92, "power_mw": 312_500, "power_limit_mw": 700_000,
           "ecc_uncorrected": 0, "ecc_corrected": 3, "remapped_rows_pending": False, "xid_errors": [79],
           "errors": []}
    g = shape_gpu(raw)
    assert list(g)[:6] == list(GPU_STATUS_KEYS)
    assert g["name"] == "NVIDIA H100 80GB HBM3" and g["utilization"] == 87.0
    assert g["memory_used"] == 40 * 2**30 and g["memory_total"] == 80 * 2**30 and g["temperature"] == 64.0
    assert g["power_w"] == 312.5 and g["power_limit_w"] == 700.0
    assert g["xid_errors"] == [79] and g["ecc_corrected"] == 3 and g["remapped_rows_pending"] is False
    # a consumer board: no ECC, no power reading, one query failed
    g = shape_gpu({"index": 1, "name": "GeForce", "utilization_gpu": None, "memory_used": 1, "memory_total": 2,
                   "temperature": float("nan"), "power_mw": None, "ecc_uncorrected": None,
                   "errors": ["ecc_uncorrected: Not Supported"]})
    assert g["utilization"] is None and g["temperature"] is None and g["power_w"] is None
    assert g["ecc_uncorrected"] is None and g["errors"] == ["ecc_uncorrected: Not Supported"]
    json.dumps(g, allow_nan=False)


def _gpu(**kw):
    base = {"index": 0, "name": "A100", "utilization_gpu": 50, "memory_used": 1, "memory_total": 2,
            "temperature": 60, "ecc_uncorrected": 0, "ecc_corrected": 0}
    return {**base, **kw}


def _hb(gpus, mem=40.0):
    return {"node_id": "n1", "address": "10.0.0.1", "memory_percent": mem, "cpu_percent": 10.0, "gpus": gpus}


def test_gpu_fault_from_xid_ecc_temperature_and_lost_gpus():
    cs = ClusterState()
    assert cs.heartbeat(_hb([_gpu(), _gpu(index=1)]), 0.0) == []
    # an application XID (13) is a warning, a fallen-off-the-bus XID (79) critical
    (f,) = cs.heartbeat(_hb([_gpu(xid_errors=[13]), _gpu(index=1)]), 2.0)
    assert (f["detector"], f["severity"], f["metric"]) == ("gpu_fault", "warning", "xid")
    (f,) = cs.heartbeat(_hb([_gpu(), _gpu(index=1, xid_errors=[79])]), 4.0)
    assert f["severity"] == "critical" and "79" in f["message"] and f["details"]["gpu"] == 1
    # new uncorrectable ECC errors: critical; corrected ones: info
    found = cs.heartbeat(_hb([_gpu(ecc_uncorrected=2, ecc_corrected=5), _gpu(index=1)]), 6.0)
    assert sorted((f["metric"], f["severity"]) for f in found) == [("ecc_corrected", "info"),
                                                                   ("ecc_uncorrected", "critical")]
    assert cs.heartbeat(_hb([_gpu(ecc_uncorrected=2, ecc_corrected=5), _gpu(index=1)]), 8.0) == []
    # temperature: at the GPU's own slowdown threshold a warning (latched), near shutdown critical
    hot = _gpu(ecc_uncorrected=2, ecc_corrected=5, temperature=88, temperature_slowdown=87,
               temperature_shutdown=97)
    (f,) = cs.heartbeat(_hb([hot, _gpu(index=1)]), 10.0)
    assert f["severity"] == "warning" and f["metric"] == "temperature" and f["threshold"] == 87
    assert cs.heartbeat(_hb([hot, _gpu(index=1)]), 12.0) == []  # still hot: not repeated at once
    (f,) = cs.heartbeat(_hb([{**hot, "temperature": 93}, _gpu(index=1)]), 14.0)
    assert f["severity"] == "critical"
    assert cs.node_health("n1") == "critical"
    # a GPU disappears
    found = cs.heartbeat(_hb([{**hot, "temperature": 60}]), 16.0)
    assert [(f["metric"], f["severity"]) for f in found] == [("gpu_count", "critical")]
