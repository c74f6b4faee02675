"""benchmarks/peers.py: a smoke run on tiny shapes, and its ratio, merge and report code."""

from __future__ import annotations

import json

import pytest
import repository

peers = repository.load("benchmarks/peers.py", "peers_benchmark")


def _row(family, impl, kind, runs, ours=False, note="", shape="2x3x4"):
    return dict(family=family, shape=shape, impl=impl, kind=kind, ours=ours, runs_ms=runs,
                first_s=0.1, ops=None, bytes_per_param=None, note=note)


RESULTS = [
    _row("Lion", "optlib", "eager", [2.0, 2.2, 1.8], ours=True),
    _row("Lion", "optlib compiled", "compiled", [1.0, 1.0, 1.0], ours=True),
    _row("Lion", "lion-pytorch", "eager", [1.0, 2.0, 2.0]),
    _row("Lion", "pytorch-optimizer foreach", "eager", [1.5, 1.6, 1.4]),
    _row("Adam", "optlib", "eager", [1.0, 1.0, 1.0], ours=True),
    _row("Adam", "optlib compiled", "compiled", [0.5, 0.5, 0.5], ours=True,
         note="falls back to eager: cannot trace"),
    _row("Adam", "torch foreach", "eager", [1.0, 1.0, 1.0]),
    _row("Adam", "torch fused", "compiled", [0.4, 0.5, 0.6]),
    _row("Adam", "torch for-loop", "eager", [], note="did not run: RuntimeError: x"),
    _row("Adam", "optlib, one call per group", peers.DIAGNOSTIC, [0.1, 0.1, 0.1]),
]


def test_ratio_stats_are_per_run():
    stats = peers.ratio_stats([2.0, 3.0, 4.0], [1.0, 2.0, 2.0])
    assert stats == dict(median=2.0, lo=1.5, hi=2.0)
    with pytest.raises(ValueError, match="same positive number of runs"):
        peers.ratio_stats([1.0], [1.0, 2.0])


def test_summarize_picks_the_fastest_peer_of_the_same_kind():
    summary = {(s["family"], s["impl"]): s for s in peers.summarize(RESULTS)}
    lion = summary[("Lion", "optlib")]
    # the fastest peer by its median over the runs (1.5 < 2.0), ratios taken run by run
    assert lion["peer"] == "pytorch-optimizer foreach" and lion["against"] == "eager"
    assert lion["ratio"] == pytest.approx(2.0 / 1.5)
    assert (lion["lo"], lion["hi"]) == (pytest.approx(1.8 / 1.4), pytest.approx(2.2 / 1.6))
    # no compiled peer of Lion: against the fastest peer of any kind, and said so
    compiled = summary[("Lion", "optlib compiled")]
    assert compiled["against"] == "any kind" and compiled["peer"] == "pytorch-optimizer foreach"
    adam = summary[("Adam", "optlib compiled")]
    assert adam["peer"] == "torch fused" and adam["ratio"] == pytest.approx(1.0)
    assert adam["note"].startswith("falls back")
    assert summary[("Adam", "optlib")]["peer"] == "torch foreach"     # the failed peer is out
    # a diagnostic row is compared with nothing, even where there is no compiled peer
    assert not any(s["peer"] == "optlib, one call per group" for s in summary.values())
    assert ("Adam", "optlib, one call per group") not in summary
    assert [peers.verdict(x) for x in (None, 1.0, 1.05, 1.06)] == ["no peer", "ok", "ok", "slower"]
    assert peers.verdict(1.2, 1.04) == "within spread" and peers.verdict(1.2, 1.06) == "slower"


def _meta(date="2026-01-02 03:04 UTC", settings="test"):
    return dict(date=date, settings=settings, load="shared with other jobs", notes=[],
                machine=dict(cpu="Test CPU", cpus=2, os="Linux", python="3.11", torch="2.x",
                             threads=1, peers={"lion-pytorch": "0.2.5", "heavyball": None}))


def test_report_names_date_machine_versions_and_causes():
    text = peers.format_report(_meta(), RESULTS, {"Lion": "three passes instead of one."})
    for needle in ("- Date: 2026-01-02 03:04 UTC", "Test CPU, 2 logical CPUs",
                   "shared with other jobs", "torch 2.x", "lion-pytorch 0.2.5",
                   "missing: heavyball", "## Summary", "## All timings",
                   "- **Lion** (optlib, 2x3x4): three passes instead of one.",
                   "  - Lion, optlib, 2x3x4: 1.33x pytorch-optimizer foreach.",
                   "pytorch-optimizer foreach (no compiled peer)",
                   "optlib compiled (falls back to eager)", "1.33 [1.29–1.38] | slower",
                   "Adam: falls back to eager: cannot trace", "did not run: RuntimeError: x"):
        assert needle in text, needle


def test_causes_are_found_by_shape_and_implementation_first():
    causes = {"Lion": "any", ("Lion", "optlib compiled"): "compiled",
              ("Lion", "2x3x4", "optlib"): "eager here"}
    assert peers.cause_of(causes, "Lion", "2x3x4", "optlib") == "eager here"
    assert peers.cause_of(causes, "Lion", "9x9x9", "optlib") == "any"
    assert peers.cause_of(causes, "Lion", "2x3x4", "optlib compiled") == "compiled"
    assert peers.cause_of(causes, "Adam", "2x3x4", "optlib") == "not yet measured."


def test_time_in_operators_is_part_of_the_step():
    """The operators of a step account for at most its time; Python around them for none."""
    import time

    import torch

    x = torch.ones(1000)

    def step():
        x.mul_(1.0)
        time.sleep(0.01)        # host time: not inside an operator

    start = time.perf_counter()
    inside = peers.time_in_operators(step, steps=3)
    total = (time.perf_counter() - start) / 3
    assert 0 < inside < 0.005 < total


def test_merge_keeps_every_part_and_says_so():
    a = dict(meta=_meta(settings="eager"), results=RESULTS[:4])
    b = dict(meta=_meta(date="2026-01-02 04:00 UTC", settings="compiled"),
             results=[_row("Lion", "optlib compiled", "compiled", [3.0, 3.0, 3.0], ours=True)]
             + RESULTS[4:])
    merged = peers.merge([a, b])
    # the later part's Lion replaces the earlier part's as a whole: ratios stay within a run
    lion = [r for r in merged["results"] if r["family"] == "Lion"]
    assert [(r["impl"], r["runs_ms"]) for r in lion] == [("optlib compiled", [3.0, 3.0, 3.0])]
    assert len(merged["results"]) == 1 + len(RESULTS[4:])
    assert merged["meta"]["date"] == "2026-01-02 03:04 UTC / 2026-01-02 04:00 UTC"
    assert "part 1: eager; part 2: compiled" == merged["meta"]["settings"]
    assert "merged from 2 runs" in merged["meta"]["notes"][-1]
    with pytest.raises(ValueError):
        peers.merge([])


def test_parse_shape():
    assert peers.parse_shape("200x100x50") == (200, (100, 50))
    for bad in ("200x100", "0x1x1", "axbxc"):
        with pytest.raises(ValueError, match="COUNTxROWSxCOLS"):
            peers.parse_shape(bad)


def test_every_optlib_optimizer_is_timed():
    import optlib

    classes = {name for name in optlib.__all__ if isinstance(getattr(optlib, name), type)
               and issubclass(getattr(optlib, name), optlib.Optimizer)}
    timed = {name.split()[0] for name in peers.families()}
    assert classes - timed == {"Optimizer", "MuonWithAdamW"}   # Muon and AdamW: timed alone


def test_smoke_run_writes_a_report(tmp_path):
    """One optimizer, tiny matrices, no compile: the whole path through main()."""
    out, report = tmp_path / "part.json", tmp_path / "report.md"
    assert peers.main(["--optimizers", "Adam", "--shapes", "3x8x6", "--repeats", "2",
                       "--reps", "2", "--no-compile", "--json", str(out),
                       "--report", str(report)]) == 0
    record = json.loads(out.read_text())
    impls = {r["impl"]: r for r in record["results"]}
    assert {"optlib", "torch for-loop", "torch foreach", "torch fused"} <= set(impls)
    assert "optlib compiled" not in impls
    assert all(len(r["runs_ms"]) == 2 for r in impls.values())
    assert impls["optlib"]["ops"] > 0 and impls["optlib"]["bytes_per_param"] > 0
    assert 0 < impls["optlib"]["in_ops_ms"] and 0 < impls["torch fused"]["in_ops_ms"]
    # the diagnostic row of optlib's rule once per group is timed too
    assert impls["optlib, one call per group"]["kind"] == peers.DIAGNOSTIC
    assert impls["torch fused"]["ops"] is None                  # counted for eager steps only
    text = report.read_text()
    assert "| Adam | 3x8x6 | optlib |" in text and "torch 2." in text
    merged = tmp_path / "merged.md"
    assert peers.main(["--merge", str(out), str(out), "--report", str(merged)]) == 0
    assert "merged from 2 runs" in merged.read_text()


def test_facts_name_what_the_run_measured():
    """A slower row's measurements: the split inside operators, calls and bytes, the same
    rule's foreach peer, the one-call-per-group diagnostic and the fixed cost per step."""
    def row(impl, kind, runs, ours=False, shape="20x10x10", **extra):
        r = _row("Lion", impl, kind, runs, ours=ours, shape=shape)
        r.update(in_ops_ms=None, ops=None, bytes_per_param=None)
        r.update(extra)
        return r

    results = [
        row("optlib", "eager", [2.0, 2.0], ours=True, in_ops_ms=1.5, ops=9, bytes_per_param=68),
        row("pytorch-optimizer for-loop", "eager", [1.0, 1.0], in_ops_ms=0.9, ops=102,
            bytes_per_param=52),
        row("pytorch-optimizer foreach", "eager", [1.6, 1.6]),
        row("optlib, one call per group", peers.DIAGNOSTIC, [1.2, 1.2]),
    ]
    entry = next(s for s in peers.summarize(results) if s["impl"] == "optlib")
    overhead = [row("optlib", "eager", [0.5], ours=True, shape="20x1x1"),
                row("pytorch-optimizer for-loop", "eager", [0.4], shape="20x1x1")]
    text = peers.facts(results, entry, overhead)
    for needle in ("optlib 2 ms, 1.5 in operators", "pytorch-optimizer for-loop 1 ms, 0.9 in",
                   "operator calls 9 against 102, bytes per parameter 68 against 52",
                   "optlib / pytorch-optimizer foreach 1.25", "optlib, one call per group 1.2 ms",
                   "fixed cost on 20x1x1 (one-element matrices): optlib 0.5 ms, "
                   "pytorch-optimizer for-loop 0.4 ms"):
        assert needle in text, needle
    # the fixed cost of 200 tensors says nothing about a shape of 20
    assert "fixed cost" not in peers.facts(
        results, entry, [dict(r, shape="200x1x1") for r in overhead])


def test_a_written_reason_is_attached_only_where_the_run_still_shows_it():
    """A Cause quotes this run's measurements and rests on them: where they no longer
    show what it says (the rule changed), the row gets what the run measured instead,
    and the report says which written reason no longer holds."""
    def row(impl, kind, runs, ours=False, **extra):
        r = _row("Lion", impl, kind, runs, ours=ours, shape="20x10x10")
        r.update(in_ops_ms=None, ops=None, bytes_per_param=None)
        r.update(extra)
        return r

    def results(ours_bytes):
        return [row("optlib", "eager", [2.0, 2.0], ours=True, in_ops_ms=1.9, ops=9,
                    bytes_per_param=ours_bytes),
                row("pytorch-optimizer foreach", "eager", [1.0, 1.0], in_ops_ms=0.9, ops=7,
                    bytes_per_param=52)]

    cause = peers.Cause("{ours_bytes:.0f} bytes against {peer}'s {peer_bytes:.0f}.",
                        lambda m: m["ours_bytes"] > m["peer_bytes"], "more bytes than the peer")
    causes = {("Lion", "optlib"): cause}
    text = peers.format_report(_meta(), results(68), causes)
    assert "- **Lion** (optlib, 20x10x10): 68 bytes against pytorch-optimizer foreach's 52." in text
    text = peers.format_report(_meta(), results(52), causes)     # the bytes went away
    assert "68 bytes" not in text and "52 bytes against" not in text
    assert ("no written reason fits this run's measurements yet; they show about as many "
            "bytes per parameter as pytorch-optimizer foreach (52 against 52); 9 operator "
            "calls against 7; 1.9 of its 2 ms inside operators, against the peer's 0.9 of 1: "
            "longer inside them. (The written reason for this row rests on more bytes than "
            "the peer, which this run does not show.)") in text
    # a measurement the row lacks (a compiled row counts no bytes) fails the premise too
    entry = next(s for s in peers.summarize(results(68)) if s["impl"] == "optlib")
    m = peers.measured(results(68), entry)
    assert (m["ours_ops"], m["peer_bytes"], m["ratio_to"]["pytorch-optimizer foreach"]) == (9, 52, 2.0)
    assert not peers.Cause("x", lambda m: m["ops"]["torch foreach"] > 1).applies(m)
    assert peers.cause_of({"Lion": "plain text."}, "Lion", "20x10x10", "optlib", m) == "plain text."


def test_every_written_reason_formats_with_a_runs_measurements():
    """The format fields of every Cause in CAUSES are keys of measured()."""
    m = dict(family="X", shape="20x10x10", impl="optlib", peer="pytorch-optimizer for-loop",
             ratio=1.2, count=20, falls_back=False, ours_ms=2.0, peer_ms=1.0, ours_in=1.0,
             peer_in=1.0, ours_ops=10, peer_ops=10, ours_bytes=120.0, peer_bytes=100.0,
             one_call_ms=2.0, per_tensor_ops=1.0, peer_per_tensor_ops=1.0, ours_host=1.0,
             peer_host=0.0)
    names = ("torch", "torch foreach", "torch for-loop", "lion-pytorch", peers.NO_GRAFT, "optlib")
    m.update(ms=dict.fromkeys(names, 1.0), ops=dict.fromkeys(names, 1),
             bytes=dict.fromkeys(names, 1.0), in_ops=dict.fromkeys(names, 1.0),
             ratio_to=dict.fromkeys(names, 1.0))
    for key, entry in peers.CAUSES.items():
        for cause in entry if isinstance(entry, tuple) else (entry,):
            if isinstance(cause, peers.Cause):
                assert cause.text.format(**m), key
                cause.applies(m)


def test_a_key_may_hold_causes_tried_in_order():
    """A tuple of causes under one key: the first whose measurements hold is attached;
    where none holds, the row says what it measured and names each one."""
    first = peers.Cause("first.", lambda m: m["ratio"] > 2, "a ratio over 2")
    second = peers.Cause("second {ratio}.", lambda m: m["ratio"] > 1, "a ratio over 1")
    causes = {("Lion", "optlib"): (first, second)}
    m = dict(ratio=1.5, ours_bytes=None, peer_bytes=None, ours_ops=None, peer_ops=None,
             ours_in=None, peer_in=None, ours_ms=None, falls_back=False)
    assert peers.cause_of(causes, "Lion", "2x3x4", "optlib", m) == "second 1.5."
    m["ratio"] = 0.5
    reason = peers.cause_of(causes, "Lion", "2x3x4", "optlib", m)
    assert "a ratio over 2; a ratio over 1" in reason


def test_shampoo_is_timed_beside_its_rule_without_grafting():
    """Shampoo's diagnostic row: optlib's Shampoo with graft=None (pytorch-optimizer's rule,
    which has no grafting), compared with nothing; the reason for its slower row rests on
    it, and on the one-call-per-group row being found by its label, not by its kind."""
    impls = {i.label: i for i in peers.contestants("Shampoo", compile=False, per_tensor=True)}
    assert impls[peers.NO_GRAFT].kind == peers.DIAGNOSTIC and not impls[peers.NO_GRAFT].ours
    assert impls[peers.NO_GRAFT].make(peers.make_matrices(1, (2, 2))).defaults["graft"] is None

    def row(impl, kind, runs, ours=False):
        r = _row("Shampoo", impl, kind, runs, ours=ours, shape=peers.SMALL)
        r.update(in_ops_ms=1.0, ops=10, bytes_per_param=100.0)
        return r

    results = [row("optlib", "eager", [1.5, 1.5], ours=True),
               row(peers.NO_GRAFT, peers.DIAGNOSTIC, [1.0, 1.0]),
               row(peers.ONE_CALL, peers.DIAGNOSTIC, [1.4, 1.4]),
               row("pytorch-optimizer", "eager", [1.0, 1.0])]
    entry = next(s for s in peers.summarize(results) if s["impl"] == "optlib")
    assert entry["peer"] == "pytorch-optimizer"
    m = peers.measured(results, entry)
    assert m["one_call_ms"] == 1.4
    assert (m["ours_host"], m["peer_host"]) == (0.5, 0.0)    # the median less the time inside
    reason = peers.cause_of(peers.CAUSES, "Shampoo", peers.SMALL, "optlib", m)
    assert reason.startswith("optlib's Shampoo grafts Adam's step size") and "takes 1 ms" in reason
    results[1]["runs_ms"] = [1.4, 1.4]         # without grafting as slow: the reason goes
    assert "grafts" not in peers.cause_of(peers.CAUSES, "Shampoo", peers.SMALL, "optlib",
                                          peers.measured(results, entry))
