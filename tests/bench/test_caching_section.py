"""BENCHMARKS.md's caching section: ratios computed from the chains' own figures."""

from __future__ import annotations

from bench import caching


def _run(mode: str, s4_step: float, build_cpu: float) -> dict:
    cache = (
        {"build_seconds": build_cpu, "build_cpu_seconds": build_cpu, "bytes": 2**20}
        if mode == "auto"
        else None
    )
    stages = {
        name: {"step_time_ms_median": 100.0, "train_cpu_seconds": 50.0, "cache": cache, "mAP@0.5": 0.5}
        for name in caching.STAGES
    }
    stages["s4_detector_head"]["step_time_ms_median"] = s4_step
    stages["s1_rpn"]["cache"] = None
    return {"mode": mode, "stages": stages, "chain_train_cpu_seconds": 200.0 if mode == "off" else 180.0}


def test_ratios_and_build_costs_come_from_the_runs():
    runs = [_run("off", 150.0, 0), _run("auto", 75.0, 10.0), _run("auto", 60.0, 12.0), _run("off", 170.0, 0)]
    out = caching.summary(runs)
    assert out["stages"]["s4_detector_head"]["step_ratio"] == round(67.5 / 160.0, 3)
    assert out["stages"]["s2_fast_rcnn"]["step_ratio"] == 1.0
    assert out["build_cpu"] == 33.0  # s2 + s3 + s4 builds, median over the cached chains
    assert out["chain_cpu_ratio"] == 0.9 and out["chain_cpu_ratio_without_builds"] == round(147 / 200, 3)


def test_chains_read_from_disk_get_their_own_ratio_and_column():
    runs = [_run("off", 150.0, 0), _run("auto", 75.0, 10.0), _run("disk", 90.0, 10.0), _run("off", 150.0, 0)]
    out = caching.summary(runs)
    assert out["stages"]["s4_detector_head"]["disk_ratio"] == 0.6
    assert out["stages"]["s4_detector_head"]["step_ratio"] == 0.5  # memory chains only
    text = "\n".join(caching.section({"caching": {"tiny": {"steps_per_stage": 200, "runs": runs}}}))
    assert "| s4_detector_head | 150.0 | 75.0 | **0.50** | 0.6 | 90.0 | 0.60 |" in text


def test_the_section_shows_each_cached_stage_and_the_chain():
    runs = [_run("off", 150.0, 0), _run("auto", 75.0, 10.0)]
    text = "\n".join(caching.section({"caching": {"tiny": {"steps_per_stage": 200, "runs": runs}}}))
    assert "| s4_detector_head | 150.0 | 75.0 | **0.50** | 0.6 | - | - |" in text
    assert "ratio **0.90** with the builds" in text
    assert "python -m bench --only caching" in "\n".join(caching.section({}))
