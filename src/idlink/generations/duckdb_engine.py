"""The ``duckdb`` engine: plain components by large-star / small-star in DuckDB SQL.

The algorithm of Kiveris et al., "Connected Components in MapReduce and
Beyond" (SoCC 2014), the one GraphFrames uses. Edges are kept as
``(a, b)`` with ``a > b``; one round is

- *large-star*: every node ``u`` links each larger neighbour to the smallest
  node of ``u``'s closed neighbourhood;
- *small-star*: every node ``u`` links itself and each smaller neighbour to
  the smallest of them;

and rounds repeat until the edges are a star forest (the fixed point). Each
component is then a star around its smallest node, which is its label. Every round's edges are a
table of their own (the checkpoint between rounds); the number of rounds is
reported in the generation's manifest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from idlink.generations.recluster import Inputs

# A component of n nodes needs O(log n) rounds; this bound is never reached on
# a real graph and stops a run that would not converge.
MAX_ROUNDS = 200

LARGE_STAR = """
CREATE OR REPLACE TABLE large AS
WITH nb AS (SELECT a AS u, b AS v FROM edges UNION ALL SELECT b AS u, a AS v FROM edges),
     m AS (SELECT u, least(u, min(v)) AS m FROM nb GROUP BY u)
SELECT DISTINCT nb.v AS a, m.m AS b FROM nb JOIN m USING (u) WHERE nb.v > nb.u
"""
SMALL_STAR = """
CREATE OR REPLACE TABLE small AS
WITH m AS (SELECT a AS u, min(b) AS m FROM large GROUP BY a),
     x AS (SELECT a AS u, b AS v FROM large UNION SELECT a AS u, a AS v FROM large)
SELECT DISTINCT x.v AS a, m.m AS b FROM x JOIN m USING (u) WHERE x.v <> m.m
"""
# The fixed point: every node has at most one edge, to a node that has none.
# Rounds keep the components and edges run from larger to smaller nodes, so
# then each star is one component around its smallest node.
NOT_A_STAR_FOREST = """
SELECT EXISTS (SELECT a FROM edges GROUP BY a HAVING count(*) > 1)
    OR EXISTS (SELECT 1 FROM edges x JOIN edges y ON x.b = y.a)
"""


def large_small_star(connection: Any, edges: pa.Table) -> int:
    """Run the rounds on ``edges`` (columns src, dst); leaves the star in table ``edges``."""
    connection.register("input_edges", edges)
    connection.execute(
        "CREATE OR REPLACE TABLE edges AS SELECT DISTINCT greatest(src, dst) AS a, "
        "least(src, dst) AS b FROM input_edges WHERE src <> dst"
    )
    connection.unregister("input_edges")
    rounds = 0
    while connection.execute(NOT_A_STAR_FOREST).fetchone()[0]:
        rounds += 1
        if rounds > MAX_ROUNDS:
            raise RuntimeError(f"large-star / small-star did not converge in {MAX_ROUNDS} rounds")
        connection.execute(LARGE_STAR)
        connection.execute(SMALL_STAR)
        connection.execute("DROP TABLE edges")
        connection.execute("ALTER TABLE small RENAME TO edges")
        connection.execute("DROP TABLE large")
    return rounds


def components(inputs: Inputs, details: dict[str, Any]) -> np.ndarray:
    """Each contact's plain component, labelled by its smallest contact id."""
    import duckdb

    src, dst = inputs.edges()
    labels = np.arange(inputs.contacts, dtype=np.int64)
    with duckdb.connect() as connection:
        rounds = large_small_star(connection, pa.table({"src": src, "dst": dst}))
        star = connection.execute("SELECT a, min(b) AS b FROM edges GROUP BY a").fetchnumpy()
    labels[np.asarray(star["a"], np.int64)] = np.asarray(star["b"], np.int64)
    details["edges"] = int(len(src))
    details["rounds"] = rounds
    details["plain_components"] = int(len(np.unique(labels)))
    return np.unique(labels, return_inverse=True)[1].astype(np.int64)
