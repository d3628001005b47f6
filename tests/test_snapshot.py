"""snapshot: every tensor an object holds, by path, saved and loaded in place."""

import pytest
import torch

from recurrent_ppo.normalize import RewardNormalizer
from recurrent_ppo.snapshot import load_tensors, save_tensors, tensor_attributes


class Inner:
    def __init__(self):
        self.count = torch.zeros(2)


class Owner:
    def __init__(self):
        self.state = {"deck": torch.arange(3), "nested": Inner()}
        self.hidden = (torch.ones(1), torch.ones(2))
        self.policy = torch.nn.Linear(2, 2)  # a module: its state_dict covers it
        self.step = lambda: None  # a function: not state
        self.norm = RewardNormalizer(2, 0.9, "cpu")  # callable objects are state

    def __call__(self):
        return None


def test_paths_cover_dicts_tuples_nested_and_callable_objects_but_not_modules_or_functions():
    paths = set(tensor_attributes(Owner()))
    assert paths == {"state.deck", "state.nested.count", "hidden.0", "hidden.1", "norm.returns", "norm.stats.mean",
                     "norm.stats.var", "norm.stats.count"}


def test_load_copies_in_place_and_names_what_does_not_fit():
    first, second = Owner(), Owner()
    first.state["nested"].count += 5
    address = second.state["nested"].count.data_ptr()
    load_tensors(second, save_tensors(first), "test state")
    assert torch.equal(second.state["nested"].count, torch.full((2,), 5.0))
    assert second.state["nested"].count.data_ptr() == address, "in place: compiled graphs keep their addresses"
    saved = save_tensors(first)
    saved["hidden.1"] = torch.ones(3)
    with pytest.raises(ValueError, match=r"test state hidden.1 is torch.float32 \[3\]"):
        load_tensors(second, saved, "test state")
