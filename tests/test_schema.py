"""The declared tables of ytspark.schema: each Spark schema and its Arrow twin come from one declaration."""
from __future__ import annotations

import pyarrow as pa
import pytest
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema

from ytspark import schema as S


def _loose(t: pa.DataType) -> pa.DataType:
    """The type with list items nullable: Spark's converter marks them from containsNull, Arrow's default is nullable."""
    return pa.list_(_loose(t.value_type)) if pa.types.is_list(t) else t


@pytest.mark.parametrize("name", sorted(S.DECLARED_TABLES))
def test_spark_and_arrow_twins_agree(name):
    table = S.DECLARED_TABLES[name]
    spark, arrow = table.to_spark(), table.to_arrow()
    assert spark.names == arrow.names == table.names
    # Spark's own Spark -> Arrow conversion of the Spark twin gives the Arrow twin (names, types, nullability).
    converted = to_arrow_schema(spark)
    for want, got in zip(converted, arrow):
        assert (got.name, _loose(got.type), got.nullable) == (want.name, _loose(want.type), want.nullable), name


def test_module_schemas_are_the_declared_ones():
    from ytspark.prepare.batch_candidates import CANDIDATE_ARROW_SCHEMA
    from ytspark.prepare.batch_ranking import RANKING_ARROW_SCHEMA
    from ytspark.prepare.batch_sequences import SEQUENCE_ARROW_SCHEMA
    from ytspark.score import scorer

    assert CANDIDATE_ARROW_SCHEMA is S.CANDIDATE_ARROW_SCHEMA
    assert SEQUENCE_ARROW_SCHEMA is S.SEQUENCE_ARROW_SCHEMA
    assert RANKING_ARROW_SCHEMA is S.RANKING_ARROW_SCHEMA
    assert scorer.ARROW_SCHEMA is S.SCORED_ARROW_SCHEMA
    assert S.SEQUENCE.names[: len(S.CANDIDATE.names)] == S.CANDIDATE.names
    assert S.RECOMMENDATIONS.names[: len(S.SCORED.names)] == S.SCORED.names


def test_known_types_of_a_few_columns():
    """Hand-checked: a twin that drifted from the other (or from what prepare writes) fails here."""
    cand = {f.name: f for f in S.CANDIDATE_SCHEMA.fields}
    assert cand[S.CAND_WATCH_HIST].dataType == T.ArrayType(T.IntegerType(), False)
    assert cand[S.CAND_LABEL_TS].dataType == T.DoubleType() and not cand[S.CAND_LABEL_TS].nullable
    assert S.CANDIDATE_ARROW_SCHEMA.field(S.CAND_WATCH_AGE).type == pa.list_(pa.float32())
    assert S.RANKING_ARROW_SCHEMA.field(S.RANK_IMPRESSION_TS).type == pa.float64()
    assert S.SCORED_ARROW_SCHEMA.field(S.RANK).type == pa.int32()
    rejects = {f.name: f.nullable for f in S.REJECTS_SCHEMA.fields}
    assert rejects == {S.REJECT_TABLE: False, S.REJECT_REASON: False, S.RAW: True}


def test_unknown_kind_is_named():
    with pytest.raises(ValueError, match="x: decimal"):
        S.Table([("x", "decimal")])
