"""The analysts' uplift view, as the service hands it out (issue 15, part 6c).

Where it sits: `ews monitor --round R --actions` writes EWS_HOME/monitoring/<round>/uplift.json
(monitoring/uplift.py `UpliftView`: uplift per cell with intervals, suppressed small cells, and the
dropouts averted at the schools' capacity by risk vs by estimated benefit). Serving never imports
monitoring (imports flow the other way): the route reads the file, checks it is the view it expects
(a JSON object naming its round and schema), and returns it to analyst, auditor and admin tokens.
"""

from __future__ import annotations

import json
from typing import Any

from features.home import EwsHome
from serving.views import RequestError, parse_round_id

SUPPORTED_SCHEMA = 1


def uplift_json(home: EwsHome, round_id: str) -> dict[str, Any]:
    """The round's uplift view (404 when `ews monitor --actions` has not written one; 409 when the
    file is not a view this service reads). The round id is parsed first, so a request can never
    name a path outside the monitoring folder."""
    r = parse_round_id(round_id)
    path = home.monitoring_uplift(r)
    if not path.is_file():
        raise RequestError(404, f"no uplift view for round {r.round_id}: run `ews ingest DIR` of the assignment, then `ews monitor --round {r.round_id} --actions`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise RequestError(409, f"the uplift view of round {r.round_id} is damaged: run `ews monitor` again") from None
    if not isinstance(data, dict) or data.get("round_id") != r.round_id or data.get("schema_version") != SUPPORTED_SCHEMA:
        raise RequestError(409, f"the uplift view of round {r.round_id} is not one this service reads "
                                f"(schema {SUPPORTED_SCHEMA}): run `ews monitor` again")
    return data
