"""Loading official-format VRT and SpyNet weight files."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from vrt_spike.models.vrt import VRT, load_spynet_weights, load_vrt_checkpoint
from vrt_spike.models.vrt.warp import SpyNet


@pytest.mark.parametrize("wrapped", [True, False])
def test_round_trip_restores_every_tensor(tmp_path: Path, tiny_vrt: VRT, tiny_kwargs: dict, wrapped: bool) -> None:
    state = tiny_vrt.state_dict()
    path = tmp_path / "vrt.pth"
    torch.save({"params": state} if wrapped else state, path)
    fresh = load_vrt_checkpoint(VRT(**tiny_kwargs), path).eval()
    loaded = fresh.state_dict()
    assert loaded.keys() == state.keys()
    for k, v in loaded.items():
        assert torch.equal(v, state[k]), k


def test_mismatched_file_lists_missing_unexpected_and_shapes(tmp_path: Path, tiny_vrt: VRT, tiny_kwargs: dict) -> None:
    state = dict(tiny_vrt.state_dict())
    del state["stage3.linear1.weight"]
    state["stage9.bogus"] = torch.zeros(1)
    state["conv_last.bias"] = torch.zeros(5)
    path = tmp_path / "bad.pth"
    torch.save({"params": state}, path)
    with pytest.raises(RuntimeError) as info:
        load_vrt_checkpoint(VRT(**tiny_kwargs), path)
    msg = str(info.value)
    assert "missing keys 1 [stage3.linear1.weight]" in msg
    assert "unexpected keys 1 [stage9.bogus]" in msg
    assert "conv_last.bias: file (5,) vs model (3,)" in msg
    assert str(path) in msg


def test_missing_and_malformed_files(tmp_path: Path, tiny_kwargs: dict) -> None:
    model = VRT(**tiny_kwargs)
    with pytest.raises(FileNotFoundError, match="VRT weight file not found: .*nope.pth"):
        load_vrt_checkpoint(model, tmp_path / "nope.pth")
    torch.save({"params": [1, 2]}, tmp_path / "list.pth")
    with pytest.raises(ValueError, match="must hold a state dict"):
        load_vrt_checkpoint(model, tmp_path / "list.pth")


class _Payload:
    def __reduce__(self):  # executes on unpickling unless weights_only blocks it
        return (print, ("code ran",))


def test_loading_refuses_arbitrary_pickles(tmp_path: Path, tiny_kwargs: dict) -> None:
    path = tmp_path / "evil.pth"
    with path.open("wb") as f:
        pickle.dump({"params": _Payload()}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError):
        load_vrt_checkpoint(VRT(**tiny_kwargs), path)


def _official_spynet_file(path: Path) -> dict[str, torch.Tensor]:
    """The layout of spynet_sintel_final-3d2a1287.pth: {'params': basic_module.{i}.basic_module.{j}.*}."""
    gen = torch.Generator().manual_seed(5)
    channels = [8, 32, 64, 32, 16, 2]
    params = {}
    for i in range(6):
        for j in range(5):
            params[f"basic_module.{i}.basic_module.{2 * j}.weight"] = torch.randn(channels[j + 1], channels[j], 7, 7, generator=gen)
            params[f"basic_module.{i}.basic_module.{2 * j}.bias"] = torch.randn(channels[j + 1], generator=gen)
    torch.save({"params": params}, path)
    return params


def test_spynet_loads_official_layout(tmp_path: Path, tiny_kwargs: dict) -> None:
    params = _official_spynet_file(tmp_path / "spynet.pth")
    model = VRT(**tiny_kwargs, spynet_path=tmp_path / "spynet.pth")
    state = model.spynet.state_dict()
    for k, v in params.items():
        assert torch.equal(state[k], v), k
    torch.testing.assert_close(state["mean"].flatten(), torch.tensor([0.485, 0.456, 0.406]))
    torch.testing.assert_close(state["std"].flatten(), torch.tensor([0.229, 0.224, 0.225]))


def test_spynet_path_errors(tmp_path: Path, tiny_kwargs: dict) -> None:
    with pytest.raises(FileNotFoundError, match="SpyNet weight file not found: .*absent.pth"):
        VRT(**tiny_kwargs, spynet_path=tmp_path / "absent.pth")
    params = _official_spynet_file(tmp_path / "spynet.pth")
    del params["basic_module.5.basic_module.8.bias"]
    torch.save({"params": params}, tmp_path / "partial.pth")
    with pytest.raises(RuntimeError, match=r"missing keys 1 \[basic_module.5.basic_module.8.bias\]"):
        load_spynet_weights(SpyNet(), tmp_path / "partial.pth")


def test_spynet_none_is_random_init() -> None:
    a, b = SpyNet(None), SpyNet(None)
    assert not torch.equal(a.basic_module[0].basic_module[0].weight, b.basic_module[0].basic_module[0].weight)
