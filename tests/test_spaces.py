"""Specs: leaf paths, gymnasium conversion (and refusal, by name and path), plain-data round trips, and the
encoders chosen from them."""

import pytest
import torch

from recurrent_ppo import spaces
from recurrent_ppo.models.encoders import ImageCNN, LeafEncoder, make_encoder
from recurrent_ppo.spaces import Box, Dict, Discrete, MultiBinary, MultiDiscrete, Tuple

gym = pytest.importorskip("gymnasium")
np = pytest.importorskip("numpy")
gs = gym.spaces

NESTED = Dict((("a", Box((3,))), ("b", Tuple((Discrete(3, start=1), Dict((("pos", MultiDiscrete((2, 4))),))))),
               ("seen", MultiBinary((2, 2)))))


def test_leaves_are_flat_paths_in_declared_order():
    assert list(spaces.leaves(NESTED)) == ["a", "b/0", "b/1/pos", "seen"]
    assert spaces.leaves(Discrete(4)) == {"": Discrete(4)}


def test_from_gym_converts_every_supported_space():
    space = gs.Dict({"image": gs.Box(0, 255, (8, 8, 3), "uint8"), "count": gs.Box(0, 9, (2,), "int32"),
                     "x": gs.Box(-1.0, 2.0, (2,), "float64"), "pick": gs.Discrete(4, start=-1),
                     "grid": gs.MultiDiscrete([3, 5], start=[1, 0]), "flags": gs.MultiBinary(3),
                     "pair": gs.Tuple((gs.Discrete(2), gs.Box(-1, 1, (1,))))})
    converted = spaces.from_gym(space)
    assert list(dict(converted.spaces)) == list(space.spaces), "gymnasium's order (it sorts a dict's keys)"
    assert dict(converted.spaces) == dict((
        ("image", Box((8, 8, 3), 0.0, 255.0, "uint8")), ("count", Box((2,), 0.0, 9.0, "int64")),
        ("x", Box((2,), -1.0, 2.0, "float32")), ("pick", Discrete(4, -1)), ("grid", MultiDiscrete((3, 5), (1, 0))),
        ("flags", MultiBinary((3,))), ("pair", Tuple((Discrete(2), Box((1,), -1.0, 1.0))))))
    assert converted == Dict(tuple(converted.spaces))
    per_element = spaces.from_gym(gs.Box(low=np.array([0.0, -1.0]), high=np.array([1.0, 1.0])))
    assert (per_element.low, per_element.high) == ((0.0, -1.0), 1.0)


@pytest.mark.parametrize("space,path", [
    (gs.Text(8), ""),
    (gs.Dict({"ok": gs.Discrete(2), "bad": gs.Tuple((gs.Discrete(2), gs.Graph(gs.Box(0, 1, (2,)), None)))}),
     "bad/1"),
    (gs.Tuple((gs.Sequence(gs.Discrete(3)),)), "0"),
    (gs.Dict({"choice": gs.OneOf((gs.Discrete(2), gs.Discrete(3)))}), "choice"),
    (gs.MultiDiscrete([[2, 3], [4, 5]]), ""),
], ids=["text", "graph-in-tuple-in-dict", "sequence-in-tuple", "oneof-in-dict", "2d-multidiscrete"])
def test_unsupported_observation_spaces_are_refused_by_name_and_path(space, path):
    where = f"at '{path}' of the observation space" if path else "as the observation space"
    with pytest.raises(ValueError, match=rf"unsupported space .* {where}: observations may be Box, Discrete, "
                                         rf"MultiDiscrete, MultiBinary, and Dict/Tuple of them") as error:
        spaces.from_gym(space)
    assert str(error.value).count("unsupported") == 1, "one message"


@pytest.mark.parametrize("space", [gs.Box(-float("inf"), 1.0, (2,)), gs.Box(0, 9, (2,), "int64"),
                                   gs.MultiBinary(3), gs.Dict({"a": gs.Discrete(2)})],
                         ids=["unbounded-box", "integer-box", "multibinary", "dict"])
def test_unsupported_action_spaces_are_refused_by_name(space):
    with pytest.raises(ValueError, match=r"as the action space: actions may be Discrete, MultiDiscrete"):
        spaces.action_from_gym(space)


def test_action_spaces_convert():
    assert spaces.action_from_gym(gs.Discrete(3, start=1)) == Discrete(3, 1)
    assert spaces.action_from_gym(gs.MultiDiscrete([2, 3])) == MultiDiscrete((2, 3))
    assert spaces.action_from_gym(gs.Box(-2, 2, (1,))) == Box((1,), -2.0, 2.0)


def test_plain_data_round_trips_through_a_weights_only_load(tmp_path):
    space = spaces.with_action_mask(NESTED, MultiDiscrete((2, 3)))
    torch.save({"spec": spaces.to_data(space)}, tmp_path / "spec.pt")
    assert spaces.from_data(torch.load(tmp_path / "spec.pt", weights_only=True)["spec"]) == space
    assert dict(space.spaces)[spaces.ACTION_MASK] == MultiBinary((5,))


def test_check_obs_names_the_leaf_and_both_layouts():
    obs = spaces.zeros(NESTED, (4,), "cpu")
    spaces.check_obs(NESTED, obs, "env.reset()")
    obs["b/1/pos"] = obs["b/1/pos"].float()
    with pytest.raises(ValueError, match=r"env.reset\(\): observation 'b/1/pos' has per-env shape \(2,\), dtype "
                                         r"torch.float32; its space .* needs shape \(2,\), dtype torch.int64"):
        spaces.check_obs(NESTED, obs, "env.reset()")


# --- encoders ------------------------------------------------------------------------------------------------

def test_one_hot_and_binary_features_are_exact():
    space = Dict((("pick", Discrete(3, start=-1)), ("grid", MultiDiscrete((2, 3), (1, 0))),
                  ("flags", MultiBinary((2,)))))
    encoder = LeafEncoder(space, 4)
    obs = {"pick": torch.tensor([-1, 1]), "grid": torch.tensor([[1, 2], [2, 0]]),
           "flags": torch.tensor([[True, False], [False, False]])}
    features = [leaf(obs[path]) for path, leaf in zip(encoder.paths, encoder.leaves)]
    assert torch.equal(features[0], torch.tensor([[1.0, 0, 0], [0, 0, 1]]))
    assert torch.equal(features[1], torch.tensor([[1.0, 0, 0, 0, 1], [0, 1, 1, 0, 0]]))
    assert torch.equal(features[2], torch.tensor([[1.0, 0], [0, 0]]))
    assert encoder(obs).shape == (2, 4)


@pytest.mark.parametrize("shape,chw,nature", [((8, 8, 3), False, False), ((3, 8, 8), True, False),
                                              ((40, 36, 1), False, True), ((4, 40, 40), True, True)])
def test_images_are_scaled_on_the_device_in_either_layout(shape, chw, nature):
    image = Box(shape, 0, 255, "uint8")
    cnn = ImageCNN(image, 16)
    assert cnn.chw == chw and (cnn.convs[0].kernel_size == (8, 8)) == nature
    pixels = torch.randint(0, 256, (2, 3, *shape), dtype=torch.uint8)  # [B, L, *image]
    out = cnn(pixels)
    assert out.shape == (2, 3, 16)
    as_float = (pixels.float() / 255).reshape(6, *shape)
    as_chw = as_float if chw else as_float.permute(0, 3, 1, 2)
    assert torch.allclose(out.reshape(6, 16), cnn.linear(cnn.convs(as_chw)))


def test_a_single_flat_box_keeps_the_seeds_encoder():
    torch.manual_seed(5)
    encoder = make_encoder(Box((3,)), 8)
    torch.manual_seed(5)
    seed = torch.nn.Linear(3, 8)
    torch.nn.init.orthogonal_(seed.weight, 2**0.5)
    assert isinstance(encoder, torch.nn.Sequential) and torch.equal(encoder[0].weight, seed.weight)
    assert isinstance(make_encoder(Box((2, 3)), 8), LeafEncoder), "only a flat float Box takes the seed's path"
