"""A property-based run over the console's own OpenAPI document (schemathesis generates requests
from it with hypothesis): whatever the generated values, no operation answers 500, and every error
is problem details.  The server is the real one (uvicorn, TLS) with an admin token, so every
operation is reached past authentication.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from admin_fixtures import Console, console_from_file, write_config

pytestmark = pytest.mark.slow
EXAMPLES = 15


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    c = console_from_file(write_config(tmp_path_factory.mktemp("fuzz")))
    yield c
    c.stop()


def test_no_generated_request_gets_a_500(console: Console) -> None:
    session = console.api("admin")
    doc = session.get(console.url + "api/openapi.json").json()
    schema = schemathesis.openapi.from_dict(doc)
    operations = [result.ok() for result in schema.get_all_operations()]
    # Deletions last, so that what they remove was there for the others to find.
    operations.sort(key=lambda op: op.method.upper() == "DELETE")
    assert len(operations) == sum(len(item) for item in doc["paths"].values())
    base = console.url.rstrip("/")
    seen: dict[str, int] = {}

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case) -> None:
            if case.path.startswith("/api/accounts/{name}") and (case.path_parameters or {}).get("name") == "admin":
                return  # the fuzzer's own account stays, so that it can go on
            response = case.call(base_url=base, session=session, verify=str(console.cert))
            seen[f"{case.method} {case.path}"] = response.status_code
            assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text[:500]}"
            if response.status_code >= 400 and case.path != "/api/openapi.json":
                assert "application/problem+json" in str(response.headers.get("content-type"))
                assert response.json()["code"]

        run()
    assert len(seen) == len(operations)
