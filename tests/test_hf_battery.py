"""The hf: battery (issue 22): every model type the installed transformers ships, tiny, one
step each, its roles checked (``tests/hf_battery.py``: the rules and the lists of what
cannot run and why).  About two minutes on 2 cores."""

from __future__ import annotations

import pytest

import hf_battery

pytestmark = [
    pytest.mark.slow,
    # Tiny configs give some layers zero elements (a model's optional parts at size 0).
    pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op"),
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> list[hf_battery.Outcome]:
    results = hf_battery.battery()
    # The summary table, for the record (``python tests/hf_battery.py`` prints it too).
    (tmp_path_factory.mktemp("battery") / "summary.txt").write_text(hf_battery.table(results))
    return results


def test_every_type_that_runs_has_its_layers_placed(outcomes: list[hf_battery.Outcome]) -> None:
    ran = [o for o in outcomes if o.status == "ran"]
    assert len(ran) >= 240, hf_battery.table(outcomes)
    wrong = {o.model_type: o.problems for o in ran if o.problems}
    assert not wrong, "\n".join(f"{t}: {p}" for t, ps in wrong.items() for p in ps)


def test_what_cannot_run_is_listed_with_why(outcomes: list[hf_battery.Outcome]) -> None:
    cannot = {o.model_type: o.why for o in outcomes if o.status == "cannot"}
    unlisted = {t: why for t, why in cannot.items() if t not in hf_battery.CANNOT}
    assert not unlisted, "\n".join(f"{t}: {why}" for t, why in unlisted.items())
    changed = {t: why for t, why in cannot.items() if hf_battery.CANNOT[t] not in why}
    assert not changed, "\n".join(f"{t}: {why}" for t, why in changed.items())
    # A type listed as unable to run that runs now: take it off the list.
    status = {o.model_type: o.status for o in outcomes}
    stale = [t for t in hf_battery.CANNOT if status.get(t) == "ran"]
    assert not stale, stale


def test_refusals_are_one_line_and_say_what_works(outcomes: list[hf_battery.Outcome]) -> None:
    refused = [o for o in outcomes if o.status == "refused"]
    assert refused and all("\n" not in o.why for o in refused)
    assert all(any(w in o.why for w in ("token ids", "give the model that holds it",
                                        "is_encoder_decoder=false"))
               for o in refused), [o.why for o in refused][:5]
