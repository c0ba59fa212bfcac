"""Tags in the annotation database (the Dataset page's): add, remove, idempotence, many targets, hostile names, on
SQLite and, through the `database_url` fixture, PostgreSQL (tests/leakage/conftest.py)."""
import pytest
import sqlalchemy as sa

from backend.access.names import TagNameError
from backend.leakage.annotations import IN_CHUNK, AnnotationStore


@pytest.fixture
def store(database_url):
    s = AnnotationStore(database_url)
    yield s
    s.dispose()


def test_tags_add_remove_and_are_kept_per_run(store):
    assert store.add_tag("digits", "blurry", [5, 3, 3, 900], "alice") == 3
    assert store.add_tag("digits", "blurry", [3, 7], "bob") == 1  # 3 is tagged already: only 7 is new
    assert store.add_tag("other", "blurry", [1], "bob") == 1
    assert store.add_tag("digits", "odd one", [7], "bob") == 1
    assert store.tags("digits") == {"blurry": [3, 5, 7, 900], "odd one": [7]}
    assert store.remove_tag("digits", "blurry", [5, 6], "bob") == 1  # 6 never had it
    assert store.tags("digits") == {"blurry": [3, 7, 900], "odd one": [7]} and store.tags("other") == {"blurry": [1]}
    with store.engine.connect() as conn:  # the first tagger of train:3 is kept
        who = conn.execute(sa.text("SELECT a.name FROM tags t JOIN annotators a ON a.id = t.annotator_id "
                                   "WHERE t.target = 3 AND t.run = 'digits'")).scalar_one()
    assert who == "alice"


def test_a_whole_view_is_tagged_in_one_call_past_the_parameter_limit(store):
    many = list(range(0, 3 * IN_CHUNK + 17))
    assert store.add_tag("big", "all", many, "alice") == len(many)
    assert store.add_tag("big", "all", many, "alice") == 0
    assert store.remove_tag("big", "all", many[::2], "alice") == len(many[::2])
    assert store.tags("big") == {"all": many[1::2]}


def test_names_are_data_not_sql(store):
    run = "x'); DROP TABLE tags; --"
    assert store.add_tag(run, "a:b c_d.e-f", [1], "o'brien") == 1
    assert store.tags(run) == {"a:b c_d.e-f": [1]} and store.tags("x") == {}
    for bad in ("", " lead", "semi;colon", "quote'", "x" * 64, "tab\there"):
        with pytest.raises(TagNameError, match="is not a tag name"):
            store.add_tag("digits", bad, [1], "alice")
    assert store.tags("digits") == {}
