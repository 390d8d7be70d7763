"""``OnlyIf``: a parameter that does not apply is null, one that applies keeps or fills its value."""

from __future__ import annotations

from typing import Annotated, Literal

import pydantic
import pytest

from core.workload import DEFAULT, Float, OnlyIf, Params


class Solver(Params):
    solver: Literal["hard", "pav", "dykstra"] = "pav"
    relaxed: bool = True
    lam: Annotated[Float | None, OnlyIf(solver=["pav", "dykstra"], fill=DEFAULT)] = pydantic.Field(0.5, gt=0)
    max_iter: Annotated[int | None, OnlyIf(solver=["dykstra"], relaxed=[True])] = 10
    tol: Annotated[Float | None, OnlyIf(max_iter=[10, 20], fill=lambda v: 1e-3 * v["max_iter"])] = None


def test_a_parameter_that_does_not_apply_is_null_whatever_was_given():
    hard = Solver(solver="hard", lam=2.0, max_iter=20, tol=0.1)
    assert (hard.lam, hard.max_iter, hard.tol) == (None, None, None)
    assert Solver(solver="pav", max_iter=99).max_iter is None
    assert Solver(solver="dykstra", relaxed=False, max_iter=20).max_iter is None


def test_a_parameter_that_applies_keeps_its_value():
    p = Solver(solver="dykstra", lam=2.0, max_iter=20, tol=0.5)
    assert (p.lam, p.max_iter, p.tol) == (2.0, 20, 0.5)
    assert Solver(solver="dykstra").max_iter == 10  # the field's default


def test_a_null_that_applies_takes_the_declared_fill():
    assert Solver(solver="pav", lam=None).lam == 0.5  # DEFAULT: the field's default
    assert Solver(solver="dykstra", max_iter=None).max_iter is None  # no fill: stays null
    assert Solver(solver="dykstra", max_iter=20).tol == pytest.approx(0.02)  # computed from the conditions
    assert Solver(solver="dykstra", max_iter=20, tol=None).tol == pytest.approx(0.02)


def test_conditions_compare_validated_values_and_chain():
    assert Solver(solver="dykstra", relaxed="true").max_iter == 10  # "true" is True for a bool
    assert Solver(solver="dykstra", lam="1e-4").lam == 1e-4
    assert Solver(solver="pav", tol=0.5).tol is None  # max_iter is null there, so tol does not apply


def test_a_bad_condition_value_is_reported_by_its_own_field_alone():
    with pytest.raises(pydantic.ValidationError) as err:
        Solver(solver="bogus", max_iter=3)
    assert [e["loc"] for e in err.value.errors()] == [("solver",)]
    assert "'hard', 'pav' or 'dykstra'" in str(err.value)


def test_a_bad_value_of_a_parameter_that_applies_names_it():
    with pytest.raises(pydantic.ValidationError, match="greater than 0") as err:
        Solver(solver="pav", lam=-1.0)
    assert [e["loc"] for e in err.value.errors()] == [("lam",)]
    Solver(solver="hard", lam=-1.0)  # does not apply: nulled, not validated


def test_equal_configurations_dump_equal():
    assert Solver(solver="hard", lam=2.0).model_dump() == Solver(solver="hard").model_dump()


def test_a_marker_naming_an_unknown_parameter_fails_at_class_definition():
    with pytest.raises(TypeError, match=r"Bad\.lam: OnlyIf names 'solvr'; allowed: solver"):

        class Bad(Params):
            solver: str = "pav"
            lam: Annotated[float | None, OnlyIf(solvr=["pav"])] = 1.0


def test_conditions_that_form_a_cycle_fail_at_class_definition():
    with pytest.raises(TypeError, match="OnlyIf conditions form a cycle: a -> b -> a"):

        class Cycle(Params):
            a: Annotated[int | None, OnlyIf(b=[1])] = 1
            b: Annotated[int | None, OnlyIf(a=[1])] = 1


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "OnlyIf needs at least one condition"),
        ((), {"solver": "pav"}, r"OnlyIf\(solver=\.\.\.\): the allowed values must be a list"),
    ],
)
def test_a_malformed_marker_says_what_is_allowed(args, kwargs, message):
    with pytest.raises(TypeError, match=message):
        OnlyIf(*args, **kwargs)


def test_workloads_keep_their_hand_written_rules():
    """The nine workloads' former validators, now markers: a few of the rules the workload tests rely on."""
    import workloads

    topk = workloads.get("topk_runtime").Params
    assert topk(solver="hard").lam is None and topk(solver="pav").max_iter is None
    assert topk(solver="dykstra", n=55).k == 6 and topk(solver="dykstra").max_iter == 100
    with pytest.raises(pydantic.ValidationError, match=r"solver=pav needs lam and p \(got lam=None, p=2.0\)"):
        topk(solver="pav", lam=None)
    moe = workloads.get("moe_precision").Params
    assert moe().solver is None and moe(router="relaxed", solver="pav").max_iter is None
    assert moe(router="relaxed").max_iter == 10
    memory = workloads.get("memory_depth").Params
    assert memory(block="resnet18").image_size == 32 and memory(block="conv").image_size == 8
    assert memory(block="resnet18").depth is None and memory(model="resnet", gamma=0.5).gamma is None
    adjoint = workloads.get("adjoint_error").Params
    trained = adjoint(train=True, block="conv", image_size=8)
    assert (trained.block, trained.image_size, trained.epochs, trained.batch) == (None, None, 200, 128)
    assert adjoint(init=None, block=None).init == "tied"
    pruning = workloads.get("topk_pruning").Params
    assert pruning(operator="dense").keep is None and pruning(p=None, lam=None, keep=None).keep == 0.10
