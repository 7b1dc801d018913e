import pytest
import torch
from pydantic import ValidationError

from synthmed.errors import UserError
from synthmed.models.pairing import PairCodec, PairingConfig

SHAPE = (8, 8, 4)


def _pair(num_labels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(2, 1, *SHAPE, generator=g) * 2 - 1
    mask = torch.randint(0, num_labels, (2, *SHAPE), generator=g)
    return image, mask


@pytest.mark.parametrize(
    "layout,encoding,channels,shape",
    [("channel", "onehot", 4, SHAPE), ("channel", "scaled", 2, SHAPE), ("zconcat", "scaled", 1, (8, 8, 8))],
)
def test_encode_decode_round_trip(layout, encoding, channels, shape):
    codec = PairCodec(PairingConfig(layout=layout, mask_encoding=encoding), image_channels=1, num_labels=3)
    image, mask = _pair()
    x = codec.encode(image, mask)
    assert x.shape == (2, channels, *shape) == (2, codec.channels, *codec.network_shape(SHAPE))
    image_back, mask_back = codec.decode(x)
    assert torch.allclose(image_back, image)
    assert torch.equal(mask_back, mask)


def test_scaled_encoding_maps_label_range_to_unit_interval():
    codec = PairCodec(PairingConfig(mask_encoding="scaled"), image_channels=1, num_labels=3)
    image, _ = _pair()
    mask = torch.tensor([0, 1, 2]).view(1, 3, 1, 1).expand(2, 3, 8, 4)
    x = codec.encode(image[:, :, :3], mask)
    assert x[:, 1].unique().tolist() == [-1.0, 0.0, 1.0]  # labels [0, 2] -> [-1, 1], as in the thesis


def test_binarize_merges_foreground_labels():
    codec = PairCodec(PairingConfig(mask_encoding="scaled", binarize=True), image_channels=1, num_labels=3)
    image, mask = _pair()
    _, mask_back = codec.decode(codec.encode(image, mask))
    assert torch.equal(mask_back, (mask > 0).long())


def test_activation_gives_valid_outputs():
    codec = PairCodec(PairingConfig(), image_channels=1, num_labels=3)
    out = codec.activate(torch.randn(2, 4, *SHAPE) * 5)
    assert out[:, :1].abs().max() <= 1
    assert torch.allclose(out[:, 1:].sum(dim=1), torch.ones(2, *SHAPE), atol=1e-5)


def test_zconcat_requires_scaled_encoding():
    with pytest.raises(ValidationError, match="zconcat"):
        PairingConfig(layout="zconcat", mask_encoding="onehot")


def test_fewer_than_two_labels_is_a_user_error():
    with pytest.raises(UserError, match=r"^data: the manifest lists 1 label\(s\); image/mask pairs need at least 2"):
        PairCodec(PairingConfig(), image_channels=1, num_labels=1)
    assert PairCodec(PairingConfig(binarize=True), image_channels=1, num_labels=1).num_labels == 2
