"""The NumPy one-sequence encoder a server scores with equals the torch net it copies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shortrec.models.sasrec_net import OneSequenceEncoder, SASRecConfig, SASRecNet

MAXLEN = 12


def random_net(**config) -> SASRecNet:
    torch.manual_seed(0)
    net = SASRecNet(SASRecConfig(n_items=30, maxlen=MAXLEN, hidden_size=8, **config))
    with torch.no_grad():  # biases and norms away from their initial 0 / 1, so each counts
        for parameter in net.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return net.eval()


def torch_last_hidden(net: SASRecNet, items, feedback, older) -> np.ndarray:
    with torch.inference_mode():
        hidden = net.last_hidden(
            torch.from_numpy(items[None]),
            torch.tensor([len(items)]),
            None if feedback is None else torch.from_numpy(feedback[None]),
            None if older is None else (torch.from_numpy(older), torch.zeros(1, dtype=torch.long)),
        )
    return hidden[0].numpy()


@pytest.mark.parametrize("norm", ["original", "pre", "post"])
@pytest.mark.parametrize("attention_sink", [True, False])
@pytest.mark.parametrize("attention_projection", [True, False])
@pytest.mark.parametrize("num_heads", [1, 2])
def test_equal_to_the_net_for_every_block_layout(
    norm, attention_sink, attention_projection, num_heads
):
    net = random_net(norm=norm, attention_sink=attention_sink,
                     attention_projection=attention_projection, num_heads=num_heads)  # fmt: skip
    encoder = OneSequenceEncoder(net)
    rng = np.random.default_rng(1)
    for length in (1, 2, 7, MAXLEN):  # below maxlen the sink weighs in
        items = rng.integers(1, 31, length)
        np.testing.assert_allclose(
            encoder.last_hidden(items), torch_last_hidden(net, items, None, None), atol=2e-5
        )


@pytest.mark.parametrize("older_views", [0, 5])
def test_equal_to_the_net_with_feedback_input_and_history_summary(older_views):
    net = random_net(feedback_input=True, history_summary=True)
    encoder = OneSequenceEncoder(net)
    rng = np.random.default_rng(2)
    items, feedback = rng.integers(1, 31, 9), rng.integers(1, 4, 9)
    older = rng.integers(1, 31, older_views)
    expected = torch_last_hidden(net, items, feedback, older)
    np.testing.assert_allclose(encoder.last_hidden(items, feedback, older), expected, atol=2e-5)
    # What the inputs say changes the answer: the feedback codes and the older views count.
    assert not np.allclose(encoder.last_hidden(items, 4 - feedback, older), expected, atol=1e-3)
    if older_views:
        assert not np.allclose(encoder.last_hidden(items, feedback, older[:1]), expected, atol=1e-3)


def test_missing_inputs_are_clear_errors():
    encoder = OneSequenceEncoder(random_net(feedback_input=True, history_summary=True))
    with pytest.raises(ValueError, match="feedback"):
        encoder.last_hidden(np.array([1, 2]))
    with pytest.raises(ValueError, match="older_items"):
        encoder.last_hidden(np.array([1, 2]), np.array([1, 1]))
