"""The annotation databases the store's tests run on: a fresh SQLite file, and a real PostgreSQL server."""
from __future__ import annotations

import os

import pytest

POSTGRES_ENV = "DATAMODELS_TEST_POSTGRES_URL"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """The URL of an empty annotation database: a new SQLite file, or the PostgreSQL database named by
    DATAMODELS_TEST_POSTGRES_URL with its schema dropped and recreated. Without that variable the
    PostgreSQL cases skip, except in CI (CI=true), where .ci/run starts the server and they must run."""
    if request.param == "sqlite":
        path = tmp_path / "votes.db"
        path.touch()
        return f"sqlite:///{path}"
    url = os.environ.get(POSTGRES_ENV, "").strip()
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{POSTGRES_ENV} is not set: .ci/run starts PostgreSQL and sets it")
        pytest.skip(f"no PostgreSQL server: set {POSTGRES_ENV} to an empty database's URL (.ci/run does)")
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
        conn.exec_driver_sql("CREATE SCHEMA public")
    engine.dispose()
    return url
