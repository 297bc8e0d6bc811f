"""Config validation, forward contract and save/load of the digit classifier."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForImageClassification
from transformers.modeling_outputs import ImageClassifierOutput

from hf_mnist import MnistConfig, MnistForImageClassification


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden_sizes": []}, r"hidden_sizes=\[\] is invalid without a backbone"),
        ({"hidden_sizes": [256, 0]}, r"hidden_sizes=\[256, 0\] contains non-positive widths \[0\]"),
        ({"hidden_sizes": [-3]}, r"non-positive widths \[-3\]"),
        ({"hidden_act": "swish2"}, r"hidden_act='swish2' is not supported; use one of relu"),
        ({"dropout": 1.0}, r"dropout=1.0 is outside the allowed range \[0, 1\)"),
        ({"dropout": -0.1}, r"dropout=-0.1 is outside the allowed range"),
        ({"num_channels": 2}, r"num_channels=2 is not supported; use 1 \(grey\) or 3 \(RGB\)"),
        ({"image_size": 0}, r"image_size=0 must be a positive number of pixels"),
        ({"backbone_freeze": "some"}, r"backbone_freeze='some' is not one of none, all, all_but_last_stage"),
        ({"backbone_freeze": "all"}, r"backbone_freeze='all' needs a backbone; set backbone to a timm"),
        ({"backbone_pretrained": True}, r"backbone_pretrained=True needs a backbone"),
        ({"backbone": "resnet_18"}, r"backbone='resnet_18' is not a timm architecture; did you mean"),
        ({"backbone": "hf-hub:timm/resnet18.a1_in1k"}, r"is not a timm architecture name; give the name without"),
        ({"backbone": "resnet18.nope"}, r"timm has no pretrained tag 'nope' for resnet18"),
        (
            {"backbone": "resnet18", "backbone_pretrained": True, "backbone_weights_sha256": "abc"},
            r"backbone_weights_sha256='abc' is not a SHA-256 digest",
        ),
        (
            {"backbone": "resnet18", "backbone_weights_sha256": "0" * 64},
            r"backbone_weights_sha256 is set but backbone_pretrained=False",
        ),
    ],
)
def test_config_rejects_invalid_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MnistConfig(**kwargs)


def test_config_defaults_are_seed_network():
    config = MnistConfig()
    assert config.hidden_sizes == [256, 64]
    assert config.hidden_act == "relu"
    assert config.num_labels == 10
    assert config.id2label == {digit: str(digit) for digit in range(10)}
    assert config.label2id == {str(digit): digit for digit in range(10)}


def test_default_model_layer_shapes():
    model = MnistForImageClassification(MnistConfig())
    linear_shapes = [tuple(m.weight.shape) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linear_shapes == [(256, 784), (64, 256), (10, 64)]


def test_forward_without_labels_has_no_loss():
    model = MnistForImageClassification(MnistConfig())
    output = model(pixel_values=torch.zeros(4, 1, 28, 28))
    assert isinstance(output, ImageClassifierOutput)
    assert output.logits.shape == (4, 10)
    assert output.loss is None


def test_forward_with_labels_returns_cross_entropy():
    torch.manual_seed(0)
    model = MnistForImageClassification(MnistConfig())
    pixels = torch.randn(5, 1, 28, 28)
    labels = torch.tensor([0, 3, 9, 1, 1])
    output = model(pixel_values=pixels, labels=labels)
    expected = torch.nn.functional.cross_entropy(output.logits, labels)
    assert torch.allclose(output.loss, expected)


def test_forward_reduces_rgb_to_luminance():
    torch.manual_seed(0)
    model = MnistForImageClassification(MnistConfig()).eval()
    grey = torch.randn(2, 1, 28, 28)
    rgb = grey.expand(-1, 3, -1, -1).clone()
    assert torch.allclose(model(pixel_values=rgb).logits, model(pixel_values=grey).logits, atol=1e-5)


def test_forward_rejects_wrong_image_size():
    model = MnistForImageClassification(MnistConfig())
    with pytest.raises(ValueError, match=r"pixel_values has shape \(2, 1, 32, 32\), but this model expects"):
        model(pixel_values=torch.zeros(2, 1, 32, 32))


def test_forward_rejects_two_channels():
    model = MnistForImageClassification(MnistConfig())
    with pytest.raises(ValueError, match=r"pixel_values has 2 channels; this model reads 1"):
        model(pixel_values=torch.zeros(2, 2, 28, 28))


def test_same_seed_gives_same_initial_weights():
    torch.manual_seed(123)
    first = MnistForImageClassification(MnistConfig()).state_dict()
    torch.manual_seed(123)
    second = MnistForImageClassification(MnistConfig()).state_dict()
    torch.manual_seed(124)
    third = MnistForImageClassification(MnistConfig()).state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not torch.equal(first["head.classifier.weight"], third["head.classifier.weight"])


def test_init_follows_pytorch_linear_default():
    # PyTorch's nn.Linear default, as in the hand-written loop: weights and biases uniform in
    # [-1/sqrt(fan_in), 1/sqrt(fan_in)].
    torch.manual_seed(7)
    model = MnistForImageClassification(MnistConfig())
    for layer in (model.head.hidden[0], model.head.hidden[2], model.head.classifier):
        bound = layer.in_features**-0.5
        assert layer.weight.abs().max() <= bound
        assert layer.weight.abs().max() > 0.95 * bound
        assert layer.bias.abs().max() <= bound


def test_save_pretrained_writes_shipped_files(tmp_path):
    model = MnistForImageClassification(MnistConfig(hidden_sizes=[32]))
    model.save_pretrained(tmp_path)
    names = {path.name for path in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "configuration_mnist.py", "modeling_mnist.py"} <= names
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoConfig"] == "configuration_mnist.MnistConfig"
    assert auto_map["AutoModelForImageClassification"] == "modeling_mnist.MnistForImageClassification"


def test_save_and_load_keeps_logits(tmp_path):
    torch.manual_seed(0)
    model = MnistForImageClassification(MnistConfig(hidden_sizes=[32, 16], dropout=0.2)).eval()
    pixels = torch.randn(3, 1, 28, 28)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert isinstance(AutoConfig.from_pretrained(tmp_path), MnistConfig)
    assert torch.equal(loaded(pixel_values=pixels).logits, model(pixel_values=pixels).logits)


def test_shipped_files_import_nothing_from_hf_mnist():
    import ast

    import hf_mnist

    package_dir = hf_mnist.__path__[0]
    for name in ("configuration_mnist.py", "modeling_mnist.py", "image_processing_mnist.py", "pipeline_mnist.py"):
        tree = ast.parse(open(f"{package_dir}/{name}").read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""] if node.level == 0 else []
            else:
                continue
            assert not any(module.split(".")[0] == "hf_mnist" for module in modules), (name, modules)


def test_no_digit_rows_score_uniformly():
    torch.manual_seed(0)
    model = MnistForImageClassification(MnistConfig()).eval()
    pixels = torch.randn(2, 1, 28, 28)
    plain = model(pixel_values=pixels).logits
    flagged = model(pixel_values=pixels, digit_found=torch.tensor([True, False])).logits
    assert torch.equal(flagged[0], plain[0])
    assert torch.equal(flagged[1], torch.zeros(10))
