"""The shared byte-level BPE tokenizer and its fingerprint."""
from __future__ import annotations

import pytest

from minigpt.config import DOMAINS
from minigpt.data import domain_texts
from minigpt.tokenizer import EOS, eos_id, fingerprint, load_tokenizer, save_tokenizer, train_tokenizer

SAMPLES = {
    "code": 'def mean(xs: list[float]) -> float:\n    """Average, or 0.0 for []."""\n'
            "    return sum(xs) / len(xs) if xs else 0.0\n\n\tif __name__ == '__main__':\n        print(mean([1, 2]))\n",
    "medical": "Hypokalaemia (K+ < 3.5 mmol/L) after 40 µg/kg/day; see ICD-10-CM E87.6. Excludes1: "
               "familial periodic paralysis. Onset ≥ 2 weeks — monitor ECG (QT prolongation).",
    "legal": "§ 4.2 The Licensee shall not sublicense the Software « sans » the Licensor's prior written "
             "consent; THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND.\r\n\r\n(a) Article 12",
}
TEXTS = [t for t in SAMPLES.values() for _ in range(20)]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TEXTS, vocab_size=300)


def test_fingerprint_stable_across_save_and_load(tok, tmp_path):
    save_tokenizer(tok, tmp_path / "tok.json")
    again = load_tokenizer(tmp_path / "tok.json")
    assert fingerprint(again) == fingerprint(tok)
    assert len(fingerprint(tok)) == 64 and int(fingerprint(tok), 16) >= 0  # sha256 hex
    assert again.encode(SAMPLES["legal"]).ids == tok.encode(SAMPLES["legal"]).ids


def test_training_is_deterministic(tok):
    assert fingerprint(train_tokenizer(TEXTS, vocab_size=300)) == fingerprint(tok)


def test_fingerprint_differs_for_other_text_or_vocab_size(tok):
    other_text = train_tokenizer([SAMPLES["code"]] * 60, vocab_size=300)
    other_size = train_tokenizer(TEXTS, vocab_size=320)
    assert other_size.get_vocab_size() > tok.get_vocab_size()  # the change really took effect
    prints = {fingerprint(tok), fingerprint(other_text), fingerprint(other_size)}
    assert len(prints) == 3


@pytest.mark.parametrize("domain", DOMAINS)
def test_roundtrip_hand_written_samples(tok, domain):
    text = SAMPLES[domain]
    ids = tok.encode(text).ids
    assert tok.decode(ids) == text
    assert len(ids) < len(text.encode())  # merges were learned: fewer tokens than bytes


def test_roundtrip_unseen_bytes(tok):
    # byte-level: text the tokenizer never saw (other scripts, emoji) still encodes without <unk>
    text = "Ωμέγα 漢字 🙂 \x00\x7f"
    assert tok.decode(tok.encode(text).ids) == text


def test_eos_is_id_zero(tok):
    assert eos_id(tok) == 0
    assert tok.id_to_token(0) == EOS
    assert tok.encode(f"a{EOS}b").ids.count(0) == 1  # the special token is one id, not split up
    assert 0 not in tok.encode(SAMPLES["code"]).ids


def test_vocab_size_is_respected(tok):
    assert tok.get_vocab_size() <= 300


@pytest.mark.xdist_group("train")
def test_ci_tokenizer_roundtrips_corpus_samples(ci_experiment):
    tok = ci_experiment.tokenizer
    assert eos_id(tok) == 0
    assert tok.get_vocab_size() <= ci_experiment.profile.model.vocab_size
    for domain in DOMAINS:
        docs = domain_texts(ci_experiment.corpus, domain, "eval")
        sample = docs[:: max(1, len(docs) // 5)][:5]  # spread over the split
        assert sample
        for text in sample:
            ids = tok.encode(text).ids
            assert max(ids) < ci_experiment.profile.model.vocab_size
            assert tok.decode(ids) == text
