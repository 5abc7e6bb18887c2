"""The chapter's studies, beside the core: each trains (or loads) what it needs through an
:class:`~minigpt.experiment.Experiment`, scores it with :func:`minigpt.scoring.score`, and writes
one JSON report under ``<results>/<profile>/seed-<s>/``.

* :mod:`.break1` -- specialists from differently seeded bases (Chapter 32, Break 1);
* :mod:`.tokenizer_mismatch` -- a specialist trained under another tokenizer;
* :mod:`.break2` -- router collapse from imbalanced data and cold targets (Break 2);
* :mod:`.freeze_sweep` -- freeze depth K and the divergence -> gain fit;
* :mod:`.hybrid` -- last-token vs per-token routers on windows that switch domain;
* :mod:`.ceiling` -- a router fitted on the evaluation windows, an optimistic reference.
"""
