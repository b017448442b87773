"""Generations: an account's customers computed whole, from an export, on an engine (issue 12).

``export.py`` writes an account's records and linking inputs as Parquet
(``idlink export-records``); ``recluster.py`` computes the customers of an
export on the ``local`` (compiled union-find), ``duckdb`` or ``spark`` engine
and writes them as a generation (``idlink recluster``, run by ``engines.py``); ``pids.py`` carries
customer PIDs over by SPEC 3.5; ``manifest.py`` proves a folder whole.
docs/scale-out.md says what runs where.
"""
