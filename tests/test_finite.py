"""NaN/Inf detection: the first bad env and step per field, recorded on the device, compiled as eager."""

import pytest
import torch

from recurrent_ppo.finite import EnvOutputWatch, NonFiniteError, check_update


def drive(watch, record, steps):
    """Record `steps` (a list of (reward, obs) pairs) at step indices 0, 1, ..."""
    for index, (reward, obs) in enumerate(steps):
        record(torch.tensor([index]), (reward, obs))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "aot_eager"])
def test_first_non_finite_env_and_step_per_field(compiled):
    watch = EnvOutputWatch(("reward", "observation"), "cpu")
    record = torch.compile(watch.record, fullgraph=True, backend="aot_eager") if compiled else watch.record
    good_r, good_o = torch.zeros(4), torch.zeros(4, 2, 3)
    bad_r = good_r.clone()
    bad_r[2] = float("inf")
    bad_o = good_o.clone()
    bad_o[3, 1, 0] = float("nan")
    later_r = good_r.clone()
    later_r[0] = float("nan")
    drive(watch, record, [(good_r, good_o), (bad_r, good_o), (later_r, bad_o)])
    assert watch.first.tolist() == [[2, 1], [3, 2]], "the first occurrence, lowest env, per field"
    with pytest.raises(NonFiniteError, match="non-finite reward in iteration 5, at env 2, rollout step 1"):
        watch.check(5)
    watch.reset()
    drive(watch, record, [(good_r, good_o)])
    watch.check(6)


def test_update_check_names_the_non_finite_terms():
    check_update({"loss": 1.0, "grad_norm": 2.0}, 3)
    with pytest.raises(NonFiniteError, match=r"iteration 3 went non-finite \(loss=nan, grad_norm=inf\)"):
        check_update({"loss": float("nan"), "entropy": 0.5, "grad_norm": float("inf")}, 3)
