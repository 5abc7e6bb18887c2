"""The break1 / break2 / sweep-freeze / hybrid subcommands at ci: they run, print, and write JSON whose
numbers obey invariants that hold whatever the training outcome (so the tests can fail, but never
assert a particular result of an experiment)."""
from __future__ import annotations

import json

import pytest

from minigpt.cli import main
from minigpt.config import DOMAINS
from minigpt.data import MissingWheelsError
from minigpt.experiment import Experiment
from minigpt.router import router_code_fingerprint
from minigpt.scoring import FEATURES, fused_row
from minigpt.studies.break1.matched import PREDICTIONS
from minigpt.studies.break2 import status

pytestmark = [pytest.mark.xdist_group("train"), pytest.mark.slow]


@pytest.fixture(autouse=True)
def _isolated_results(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIGPT_RESULTS_DIR", str(tmp_path))  # never overwrite results/ from a test


def _run(cmd: str, tmp_path, capsys, *options: str) -> tuple[dict, str]:
    try:
        code = main([cmd, "--profile", "ci", "--seed", "0", *options])
    except MissingWheelsError as err:
        pytest.skip(f"corpus unavailable: {err}")
    out = capsys.readouterr().out
    assert code == 0, out
    name = {"sweep-freeze": "freeze_sweep_every_depth" if "--every-depth" in options else "freeze_sweep"}.get(cmd, cmd)
    rep = json.loads((tmp_path / "ci" / "seed-0" / f"{name}.json").read_text())
    # every report records which corpus and tokenizer it was measured on
    assert len(rep["corpus_fingerprint"]) == len(rep["tokenizer_fingerprint"]) == 64
    assert rep["router_code"] == router_code_fingerprint()  # ...and with which router code
    return rep, out


def test_break1(tmp_path, capsys):
    rep, out = _run("break1", tmp_path, capsys)
    assert "what fails first" in out and rep["seed"] == 0 and rep["base_seeds"] == [0, 1, 1]
    assert rep["compat"]["refusal"] and "base fingerprint" in rep["compat"]["refusal"]
    assert rep["compat"]["healthy_report"]["ok"] and rep["matched_control"] == "0"
    shared, diff = rep["shared"]["mixed"], rep["different"]["mixed"]
    # with one shared head, hidden-state fusion is logit fusion (linear head): a real invariant
    assert shared[fused_row("hidden", "trunk of base X")] == pytest.approx(shared[fused_row("soft", "trunk of base X")],
                                                                           abs=1e-4)
    assert rep["hidden_vs_logit_fusion_max_diff"] < 1e-4
    # the code specialist sits on base X in both sets: identical numbers
    assert shared["code specialist"] == pytest.approx(diff["code specialist"], abs=1e-6)
    for mixed in (shared, diff):  # oracles bound every single specialist from below
        assert mixed["oracle (per token)"] <= mixed["oracle (per sequence)"] <= min(mixed[f"{d} specialist"] for d in DOMAINS) + 1e-9
    assert rep["controls"]["0"]["fused_logits_mixed"] == pytest.approx(shared[fused_row("soft", "trunk of base X")])
    assert set(rep["controls"]) == {"0", "1"} and set(rep["router_inputs"]) == set(FEATURES)
    _check_matched(rep)
    tm = rep["tokenizer_mismatch"]
    assert "tokenizer fingerprint" in tm["compat"]["refusal"]
    assert tm["compat"]["forced_report"]["mismatches"] == ["tokenizer"]  # same base, same trunk


def _check_matched(rep: dict) -> None:
    """Every prediction's numbers agree with the sets' own reports, and its outcome with its intervals."""
    d, ctrl = rep["different"], rep["controls"]
    rows = {r["metric"]: r for r in rep["matched"]}
    assert list(rows) == list(PREDICTIONS)
    gap = rows["oracle gap"]
    assert gap["different"] == pytest.approx(d["oracle_gap"]["trunk of base X"], abs=1e-6)
    assert gap["matched_control"] == pytest.approx(ctrl["0"]["oracle_gap"], abs=1e-6)
    assert rows["routing accuracy"]["different"] == pytest.approx(d["mean_routing_accuracy"]["trunk of base X"], abs=1e-6)
    base = rows["fused gain over its router's base"]
    assert base["matched_control"] == pytest.approx(ctrl["0"]["base_mixed"] - ctrl["0"]["fused_logits_mixed"], abs=1e-6)
    ece = rows["fused calibration error"]
    assert ece["different"] == pytest.approx(d["calibration"][fused_row("soft", "trunk of base X")]["all"]["ece"], abs=1e-6)
    for r in rep["matched"]:
        for key in ("vs_matched", "vs_mean_of_controls"):
            iv = r[key]
            assert iv["low"] <= iv["high"]
        assert r["vs_matched"]["estimate"] == pytest.approx(r["different"] - r["matched_control"], abs=1e-6)
        assert r["outcome"] in ("held", "reversed", "inconclusive", "mixed")
    h = rep["headline"]
    assert h["estimate"] == pytest.approx(diff_fused(rep), abs=1e-6) and h["catches_it"] == (h["low"] > 0)
    assert rep["what_fails_first"] == [m for m in rep["what_fails_first"] if rows[m]["outcome"] == "held"]


def diff_fused(rep: dict) -> float:
    return rep["different"]["mixed"][fused_row("soft", "trunk of base X")] - rep["controls"]["0"]["fused_logits_mixed"]


def test_break2(tmp_path, capsys):
    rep, out = _run("break2", tmp_path, capsys)
    assert "silent:" in out and set(rep["sets"]) == {"specialists", "generalist"}
    for s in rep["sets"].values():
        b = s["band"]
        assert b["replicates"] == len(b["mixed"]) >= 3 and b["low"] <= b["mean"] <= b["high"]
        assert s["healthy_mixed"] == pytest.approx(b["mixed"][0])
        assert len(s["points"]) == 12  # six mixes at two temperatures
        for name, p in s["points"].items():
            iv = p["vs_healthy_nats"]
            assert iv["low"] <= iv["estimate"] + 1e-9 and iv["estimate"] <= iv["high"] + 1e-9
            assert iv["estimate"] == pytest.approx(p["mixed_loss"] - s["healthy_mixed"], abs=1e-6)
            assert p["status"] == status(p["largest_routing_drop_pp"], p["dominant_weight_elsewhere"],
                                         p["mixed_loss"] > b["high"])
            assert p["largest_routing_drop_pp"] == pytest.approx(max(p["routing_drop_pp"].values()))
            assert 0 <= p["dominant_weight_elsewhere"] <= 1
        assert sorted(s["silent"] + s["loud"] + s["healthy"] + s["worse"]) == sorted(s["points"])
        pre = s["precondition"]
        assert pre["collapse_can_be_silent"] == (pre["dominant_alone_mixed"] <= b["high"])
    gen, spec = rep["sets"]["generalist"], rep["sets"]["specialists"]
    assert gen["experts"][0] == "generalist (monolithic crown)" and spec["experts"][0] == "code specialist"
    assert gen["experts"][1:] == spec["experts"][1:]
    sharp = [v["mean_max_target"] for v in rep["target_sharpness"].values()]  # hottest first: sharper as it cools
    assert all(1 / len(DOMAINS) - 1e-9 <= a <= b <= 1 + 1e-9 for a, b in zip(sharp, sharp[1:]))


def test_sweep_freeze_by_default_measures_the_profiles_depth_and_its_neighbours(tmp_path, capsys):
    rep, _ = _run("sweep-freeze", tmp_path, capsys)
    k, n_layer = Experiment("ci", seed=0).k, Experiment("ci", seed=0).profile.model.n_layer
    assert rep["ks"] == [K for K in (k - 1, k, k + 1) if 0 <= K < n_layer] and "none" not in rep["per_k"]
    assert rep["boundary"]["best_k"] in rep["ks"] and len(rep["boundary"]["steps"]) == len(rep["ks"]) - 1


def test_sweep_freeze_every_depth(tmp_path, capsys):
    rep, out = _run("sweep-freeze", tmp_path, capsys, "--every-depth")
    assert "KALAVAI" in out
    assert list(rep["per_k"])[0] == "none"  # nothing frozen comes first, then K = 0..L-1
    ks = [int(k) for k in rep["per_k"] if k != "none"]
    assert ks == list(range(len(ks))) == rep["ks"] and len(ks) >= 2
    params = [rep["per_k"][k]["trainable_params"] for k in ("none", *map(str, ks))]
    assert params == sorted(params, reverse=True) and len(set(params)) == len(params)  # deeper trunk, smaller crown
    assert rep["fit"]["n"] == len(rep["points"]) + len(rep["points_from_other_runs"])
    # nothing frozen: every parameter trained (untied head included), refused by compat, kept out of the fit
    none, model = rep["per_k"]["none"], Experiment("ci", seed=0).base()
    assert none["trainable_params"] == model.num_params() + model.transformer.wte.weight.numel()
    assert none["frozen_blocks"] is None and not none["shared_trunk"] and none["compat_refusal"]
    assert "trunk" in none["compat_forced_mismatches"] and rep["none_in_points"] is False
    assert [q["k"] for q in rep["points"]] == ks
    for K in ks:  # a shared tied head is linear: hidden-state fusion is logit fusion
        r = rep["per_k"][str(K)]
        assert r["compat_refusal"] is None and r["frozen_blocks"] == K
        assert r["fused_hidden_gain_vs_best_specialist_%"] == pytest.approx(r["fused_gain_vs_best_specialist_%"], abs=1e-3)
    mixed = none["mixed"]
    assert mixed["oracle (per token)"] <= min(mixed[f"{d} specialist"] for d in DOMAINS)
    assert rep["none_minus_best_k_fused_mixed"] == pytest.approx(
        mixed[fused_row("soft", "per-token")] - min(rep["per_k"][str(K)]["mixed"][fused_row("soft", "per-token")] for K in ks))
    # the boundary: the lowest fused loss, and each step between neighbours is that difference with its interval
    b, fused = rep["boundary"], {K: rep["per_k"][str(K)]["mixed"][fused_row("soft", "per-token")] for K in ks}
    assert b["best_k"] == min(ks, key=fused.get) == int(rep["best_k_by_fused_mixed"])
    for st in b["steps"]:
        iv = st["change_nats"]
        assert iv["estimate"] == pytest.approx(fused[st["to_k"]] - fused[st["from_k"]], abs=1e-6)
        assert iv["low"] <= iv["estimate"] <= iv["high"]


def test_hybrid(tmp_path, capsys):
    from minigpt.studies.hybrid import hybrid_set

    rep, out = _run("hybrid", tmp_path, capsys)
    assert "per-token" in out
    # the windows the report was measured on, rebuilt from its seed: switches counted from the segments
    segments = hybrid_set(Experiment("ci", seed=0), rep).segments
    assert len(segments) == rep["hybrid"]["n_windows"]
    assert rep["hybrid"]["switches_per_window"] == pytest.approx(sum(len(s) - 1 for s in segments) / len(segments))
    assert rep["single_domain"]["switches_per_window"] == 0
    # labels cover window positions 1..T: the first segment labels length - 1 tokens, the others length
    per_segment: dict[str, int] = {}
    for segs in segments:
        for i, s in enumerate(segs):
            per_segment[str(i + 1)] = per_segment.get(str(i + 1), 0) + s["length"] - (i == 0)
    assert sum(per_segment.values()) == rep["hybrid"]["n_tokens"]
    for part in ("single_domain", "hybrid"):
        r = rep[part]
        assert r["oracle (per token)"] <= min(r["specialists"].values())
        counts = per_segment if part == "hybrid" else {"1": r["n_tokens"]}
        for name, v in r["routers"].items():
            # overall accuracy = the token-weighted mean of the per-segment accuracies
            assert set(v["accuracy_by_segment"]) == set(counts), (part, name)
            pooled = sum(v["accuracy_by_segment"][k] * n for k, n in counts.items()) / r["n_tokens"]
            assert v["routing_accuracy"] == pytest.approx(pooled, abs=1e-6), (part, name)


def test_points_from_other_runs_pool_only_runs_on_the_same_data(tmp_path):
    from minigpt.studies.freeze_sweep import points_from_other_runs

    mine = {"corpus_fingerprint": "c1", "tokenizer_fingerprint": "t1", "router_code": "r1"}

    def write(seed: int, name: str, report: dict) -> None:
        folder = tmp_path / f"seed-{seed}"
        folder.mkdir(exist_ok=True)
        (folder / name).write_text(json.dumps({"seed": seed, **report}))

    point = lambda seed, gain: {"seed": seed, "base_seed": seed, "k": 2, "divergence": 5.0, "gain": gain}  # noqa: E731
    write(0, "freeze_sweep.json", {**mine, "points": [point(0, 1.0)]})  # this run's own sweep: not "other"
    write(1, "freeze_sweep.json", {**mine, "points": [point(1, 2.0)]})
    write(2, "freeze_sweep.json", {**mine, "tokenizer_fingerprint": "t0", "points": [point(2, 3.0)]})  # stale
    write(3, "freeze_sweep.json", {"points": [point(3, 4.0)]})  # written before fingerprints were recorded
    write(5, "freeze_sweep.json", {**mine, "router_code": "r0", "points": [point(5, 5.0)]})  # routers since edited
    (tmp_path / "seed-4").mkdir()
    (tmp_path / "seed-4" / "freeze_sweep.json").write_text('{"seed": 4, "poi')  # half-written
    controls = {str(b): {"own_domain_gain_over_own_base_%": {"code": 4.0, "medical": 6.0}, "fusion_gain_vs_best_specialist_%": 9.0}
                for b in (1, 2, 3)}
    write(1, "break1.json", {**mine, "freeze_k": 2, "controls": controls})
    write(2, "break1.json", {"corpus_fingerprint": "c0", "tokenizer_fingerprint": "t1", "freeze_k": 2, "controls": controls})

    got = points_from_other_runs(tmp_path, seed=0, provenance=mine)
    assert [(q["source"], q["seed"], q["base_seed"]) for q in got] == [
        ("freeze sweep", 1, 1), ("break1 control", 1, 2), ("break1 control", 1, 3)]  # base 1 is the run's own
    assert got[1]["divergence"] == 5.0 and got[1]["gain"] == 9.0


def test_seeds_summarises_the_runs_it_made(tmp_path, capsys):
    from minigpt.analysis.divergence import fusion_gain
    import pandas as pd

    try:
        code = main(["seeds", "--profile", "ci", "--seeds", "0"])
    except MissingWheelsError as err:
        pytest.skip(f"corpus unavailable: {err}")
    out = capsys.readouterr().out
    assert code == 0, out
    summary = json.loads((tmp_path / "ci" / "seeds.json").read_text())
    table = json.loads((tmp_path / "ci" / "seed-0" / "table.json").read_text())
    row = summary["summary"]["seed 0"]
    # the summary is computed from the table that run wrote, not from anything else
    gain = fusion_gain(pd.DataFrame.from_dict(table["table"], orient="index"))
    assert row["gain vs best specialist %"] == pytest.approx(gain, abs=1e-5)
    assert row["oracle gap nats"] == pytest.approx(table["oracle_gap_nats"])
    assert row["routing min %"] == pytest.approx(100 * min(table["routing_accuracy"]["per-token"].values()), abs=1e-5)
    assert summary["provenance"]["seed-0"]["router_code"] == router_code_fingerprint()
    assert "gain vs best specialist %" in out and "mean" in out
    from minigpt.studies.ceiling import routing_ceiling

    ceiling = routing_ceiling(Experiment("ci", seed=0))  # cached by the command: loads, does not refit
    assert row["ceiling gap nats"] == pytest.approx(ceiling["oracle_gap_nats"])
    assert row["ceiling routing min %"] == pytest.approx(100 * min(ceiling["routing_accuracy"].values()), abs=1e-5)


@pytest.mark.parametrize("seeds, problem", [("0,x", "comma-separated integers"), ("1,1", "repeats a seed")])
def test_seeds_rejects_bad_lists_in_one_line(seeds, problem, capsys):
    assert main(["seeds", "--profile", "ci", "--seeds", seeds]) == 2
    err = capsys.readouterr().err
    assert problem in err and err.count("\n") == 1
