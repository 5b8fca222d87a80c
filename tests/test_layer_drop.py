"""CopRA's layer dropping: the schedule, one draw per block and step, base output when dropped."""

import math

import pytest
import torch

from copra.backbone import load_backbone
from copra.layer_drop import LayerDropper, activation_probability
from copra.lora import add_lora, lora_layers_by_block
from copra.methods.layer_drop import LayerDropSettings
from copra.methods.lora import LoraSettings


@pytest.fixture(scope="module")
def blocks():
    backbone = load_backbone("esm2_t6_8M_UR50D", "random")
    settings = LoraSettings(target_modules=["q_proj", "k_proj", "v_proj"], rank=4)
    model = add_lora(backbone.model, settings, "test")
    return model, lora_layers_by_block(model)


@pytest.mark.parametrize("schedule", ["linear", "exponential", "sine"])
def test_schedule_rises_from_p0_to_one_over_the_first_75_percent(schedule):
    settings = LayerDropSettings(p0=0.1, stage1_fraction=0.75, schedule=schedule)
    total = 200
    ramp = math.ceil(0.75 * total)
    values = [activation_probability(t, total, settings) for t in range(total)]
    assert values[0] == pytest.approx(0.1)
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))
    assert values[ramp - 1] < 1.0
    assert all(v == 1.0 for v in values[ramp:])


def test_linear_schedule_is_the_reference_formula():
    settings = LayerDropSettings(p0=0.1, stage1_fraction=0.75, schedule="linear")
    for total in (7, 40, 1000):
        for t in range(total):
            expected = min(0.1 + 0.9 * t / math.ceil(0.75 * total), 1.0)
            assert activation_probability(t, total, settings) == pytest.approx(expected)


def test_exponential_and_sine_shapes():
    total, t = 100, 30  # r = 30 / 75 = 0.4
    exponential = LayerDropSettings(p0=0.1, schedule="exponential")
    sine = LayerDropSettings(p0=0.1, schedule="sine")
    assert activation_probability(t, total, exponential) == pytest.approx(0.1**0.6)
    assert activation_probability(t, total, sine) == pytest.approx(
        0.1 + 0.9 * math.sin(math.pi * 0.4 / 2)
    )


def test_one_draw_per_block_shared_by_its_modules(blocks):
    _, by_block = blocks
    assert sorted(by_block) == list(range(6))
    assert all(len(modules) == 3 for modules in by_block.values())
    dropper = LayerDropper(by_block, 100, LayerDropSettings(p0=0.3), seed=0)
    for step in range(20):
        active = set(dropper.draw(step))
        assert active, "at least one block stays active"
        for index, modules in by_block.items():
            states = {module.disable_adapters for module in modules}
            assert states == {index not in active}
    dropper.activate_all()
    assert not any(m.disable_adapters for modules in by_block.values() for m in modules)


def test_activation_frequency_follows_the_probability(blocks):
    _, by_block = blocks
    settings = LayerDropSettings(p0=0.4, stage1_fraction=1.0)
    dropper = LayerDropper(by_block, 10_000, settings, seed=1)
    draws = 3000
    for _ in range(draws):
        dropper.draw(0)  # p stays 0.4 at step 0
    frequency = sum(dropper.active_counts.values()) / (draws * len(by_block))
    # Redrawing empty draws lifts the rate slightly above p: P(none) = 0.6 ** 6.
    expected = 0.4 / (1 - 0.6**6)
    assert frequency == pytest.approx(expected, abs=0.02)
    assert len(dropper.history) == draws and dropper.history[0][1] == pytest.approx(0.4)
    dropper.activate_all()


def test_zero_probability_still_keeps_one_block(blocks):
    _, by_block = blocks
    dropper = LayerDropper(by_block, 10, LayerDropSettings(p0=0.0), seed=0)
    assert len(dropper.draw(0)) == 1
    dropper.activate_all()


def test_dropped_block_returns_the_base_output_only(blocks):
    _, by_block = blocks
    module = by_block[2][0]
    torch.nn.init.normal_(module.lora_B["default"].weight)  # B = 0 at init would hide the branch
    x = torch.randn(3, 5, module.base_layer.in_features)
    module.eval()
    dropper = LayerDropper(by_block, 10, LayerDropSettings(), seed=0)
    dropper._switch({0, 1})
    with torch.no_grad():
        assert torch.equal(module(x), module.base_layer(x))
        dropper.activate_all()
        assert not torch.allclose(module(x), module.base_layer(x))
    torch.nn.init.zeros_(module.lora_B["default"].weight)


def test_state_round_trip_continues_the_same_draws(blocks):
    _, by_block = blocks
    first = LayerDropper(by_block, 50, LayerDropSettings(), seed=3)
    for step in range(5):
        first.draw(step)
    saved = first.state_dict()
    expected = [first.draw(step) for step in range(5, 10)]
    second = LayerDropper(by_block, 50, LayerDropSettings(), seed=99)
    second.load_state_dict(saved)
    assert [second.draw(step) for step in range(5, 10)] == expected
    second.activate_all()
