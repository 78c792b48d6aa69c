"""The open model assembly: one shared test over every preset, decoder, skip module and head type (encoders: every
one in test_model.py), the spec's round trips, the registries' errors, and the Attention U-Net's gates."""

import numpy as np
import pytest
import keras
import tensorflow as tf

import mtunet
from mtunet.deploy.serving import TrainedModel, build_serving_functions, to_numpy
from mtunet.errors import ConfigError
from mtunet.explain.decoder_maps import DecoderMaps
from mtunet.explain.gradcam import GradCam
from mtunet.models import (
    DECODERS, HEADS, PRESETS, SKIPS, ModelSpec, build_model_from_spec, explained_layers, gradcam_layer, load_model,
    make_spec, model_heads, model_spec,
)
from mtunet.models.decoders.attention_unet import apply_attention_gate
from mtunet.models.encoders import ENCODERS
from mtunet.models.encoders.applications import ApplicationEncoder
from mtunet.training.config import TrainConfig
from mtunet.training.loop import compile_model

SIZE, NUM_CLASSES, MASK_CLASSES, LESION_TYPES = 64, 3, ("rim", "core"), ("ma", "he", "ex")
DECODER_FILTERS = (16, 16, 8, 8, 8)

# A model that exercises each head type: the task and mask classes to build it with.
HEAD_CASES = {
    "classification": {"task": "classification"},
    "binary_mask": {"task": "segmentation"},
    "multiclass_mask": {"mask_classes": MASK_CLASSES},
    "multilabel_mask": {"mask_classes": LESION_TYPES, "multilabel_masks": True},
    "ordinal": {"extra_heads": [{"type": "ordinal", "name": "grade", "num_classes": NUM_CLASSES}]},
    "regression": {"extra_heads": [{"type": "regression", "name": "position", "targets": ["x", "y"],
                                    "mean": [60.0, -3.0], "std": [20.0, 0.5]}]},
}
# the presets whose own encoder is too big for a test: the encoders to build them with
PRESET_ENCODERS = {"res_mtnet": "mobilenetv2+efficientnetb0"}
CASES = ([("preset", name, {"architecture": name, **({"encoder": PRESET_ENCODERS[name]}
                                                     if name in PRESET_ENCODERS else {})}) for name in PRESETS]
         + [("decoder", name, {"decoder": name}) for name in DECODERS]
         + [("skip", name, {"skip": name}) for name in SKIPS]
         + [("head", name, HEAD_CASES.get(name, {})) for name in HEADS])


def _spec(**options) -> ModelSpec:
    options = {"encoder": "mobilenetv2", "input_shape": (SIZE, SIZE, 1), "num_classes": NUM_CLASSES,
               "decoder_filters": DECODER_FILTERS, **options}
    return make_spec(options.pop("architecture", "unet"), **options)


def _batch(spec: ModelSpec, seed=0):
    """Images and targets for every head of ``spec``: one-hot labels, masks of class values, multi-label masks of 0/1
    with one lesion type missing (-1) in one image."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (4, SIZE, SIZE, 1)).astype("float32")
    targets = {}
    for head in model_heads(build_model_from_spec(spec, weights=None)).values():
        if head.type in ("classification", "ordinal"):
            targets[head.name] = np.eye(NUM_CLASSES, dtype="float32")[rng.integers(0, NUM_CLASSES, 4)]
        elif head.type == "regression":
            targets[head.name] = rng.normal(head.mean, head.std, (4, len(head.targets))).astype("float32")
        elif head.type == "multilabel_mask":
            targets[head.name] = rng.integers(0, 2, (4, SIZE, SIZE, len(head.mask_classes))).astype("float32")
            targets[head.name][0, ..., 1] = -1
        else:
            values = len(getattr(head, "mask_classes", ("lesion",))) + 1
            targets[head.name] = rng.integers(0, values, (4, SIZE, SIZE, 1)).astype("float32")
    return images, targets


def test_every_head_type_has_a_case():
    assert set(HEAD_CASES) == set(HEADS), "add a line to HEAD_CASES for a new head type"


@pytest.fixture(scope="module", params=CASES, ids=[f"{kind}-{name}" for kind, name, _ in CASES])
def case(request):
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    _, _, options = request.param
    spec = _spec(**options)
    return spec, build_model_from_spec(spec, weights=None)


def test_outputs_have_each_heads_shape(case):
    spec, model = case
    outputs = model.predict(_batch(spec)[0], verbose=0)
    for name, head in model_heads(model).items():
        if head.type in ("classification", "ordinal"):
            assert outputs[name].shape == (4, NUM_CLASSES)
            np.testing.assert_allclose(outputs[name].sum(axis=1), 1.0, atol=1e-5)
        elif head.type == "binary_mask":
            assert outputs[name].shape == (4, SIZE, SIZE, 1)
        elif head.type == "multilabel_mask":
            assert outputs[name].shape == (4, SIZE, SIZE, len(LESION_TYPES))
            assert ((outputs[name] >= 0) & (outputs[name] <= 1)).all()
        elif head.type == "regression":
            assert outputs[name].shape == (4, len(head.targets))
            logits = keras.Model(model.inputs, model.get_layer(head.logits_layer).output).predict(
                _batch(spec)[0], verbose=0)
            np.testing.assert_allclose(outputs[name], logits * head.std + head.mean, rtol=1e-5, atol=1e-4)
        else:
            assert outputs[name].shape == (4, SIZE, SIZE, len(MASK_CLASSES) + 1)
            np.testing.assert_allclose(outputs[name].sum(axis=-1), 1.0, atol=1e-5)


def test_keras_file_reloads_to_the_same_spec_and_outputs(case, tmp_path):
    spec, model = case
    model.save(tmp_path / "model.keras")
    reloaded = load_model(tmp_path / "model.keras")
    assert model_spec(reloaded) == spec
    images = _batch(spec, seed=1)[0]
    expected, actual = model.predict(images, verbose=0), reloaded.predict(images, verbose=0)
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name])


def test_training_steps_lower_the_loss(case):
    spec, model = case
    compile_model(model, TrainConfig(seg_loss="bce_dice"), class_weights=None)
    images, targets = _batch(spec, seed=2)
    first = model.train_on_batch(images, targets, return_dict=True)["loss"]
    for _ in range(5):
        last = model.train_on_batch(images, targets, return_dict=True)["loss"]
    assert np.isfinite(first) and last < first


def test_default_gradcam_layer_exists_and_explains_each_head(case):
    spec, model = case
    images = _batch(spec)[0][:2]
    for name in model_heads(model):
        layer = gradcam_layer(model, name)
        result = GradCam(model, head=name)(images)
        assert GradCam(model, head=name).layer == layer
        assert result.heatmaps.shape == (2, SIZE, SIZE) and (result.heatmaps >= 0).all()


def test_serving_outputs_follow_the_heads(case):
    spec, model = case
    heads = model_heads(model)
    names = [f"class_{index}" for index in range(NUM_CLASSES)]
    further = {name: names for name, head in heads.items() if head.class_index_outputs() and name != "label"}
    served = to_numpy(build_serving_functions(TrainedModel(model, names, {}, heads, further))["serving_default"](
        tf.constant(np.full((1, 50, 70, 3), 128, np.uint8))))
    expected = set()
    for name, head in heads.items():
        if head.type == "regression":
            expected |= {name}
            assert served[name].shape == (1, len(head.targets))
            continue
        expected |= {f"{name}_probabilities"}
        if head.class_index_outputs():
            class_name = head.class_index_outputs()[name]
            expected |= {name, class_name}
            assert served[class_name][0] == names[served[name][0]]
            assert served[name][0] == head.predict_numpy(served[f"{name}_probabilities"])[0]
        elif head.type == "multiclass_mask":
            expected |= {f"{name}_class_map"}
            assert served[f"{name}_class_map"].shape == (1, 50, 70)
            np.testing.assert_array_equal(served[f"{name}_class_map"], served[f"{name}_probabilities"].argmax(-1))
        else:
            channels = len(head.mask_classes) if head.type == "multilabel_mask" else 1
            assert served[f"{name}_probabilities"].shape == (1, 50, 70, channels)
    assert set(served) == expected


def test_spec_round_trips_through_json():
    spec = _spec(architecture="attention_unet", mask_classes=MASK_CLASSES)
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    assert spec.decoder == "attention_unet" and spec.heads[1] == {"type": "multiclass_mask", "name": "mask",
                                                                  "mask_classes": ["rim", "core"]}


@pytest.mark.parametrize("options, message", [
    ({"architecture": "transunet"}, r"unknown architecture 'transunet'; expected one of: unet, attention_unet"),
    ({"decoder": "fpn"}, r"unknown decoder 'fpn'; expected one of: .*attention_unet"),
    ({"skip": "dense"}, r"unknown skip module 'dense'; expected one of: identity, dfe$"),
    ({"encoder": "resnet"}, r"unknown encoder 'resnet'; expected one of: vgg16, mobilenetv2"),
    ({"mask_classes": ()}, r"a multi-class mask needs at least 2 lesion classes"),
])
def test_unknown_parts_list_the_valid_names(options, message):
    with pytest.raises(ConfigError, match=message):
        _spec(**options)


def test_unknown_head_type_and_spec_field_are_named():
    with pytest.raises(ConfigError, match=r"unknown head type 'grade'; expected one of: binary_mask, "
                                          r"classification, multiclass_mask, multilabel_mask, ordinal, regression"):
        ModelSpec("mobilenetv2", (SIZE, SIZE, 1), ({"type": "grade", "name": "grade"},)).validate()
    with pytest.raises(ConfigError, match=r"head 'size' \(regression\): missing 1 required keyword-only argument: "
                                          r"'targets'"):
        ModelSpec("mobilenetv2", (SIZE, SIZE, 1), ({"type": "regression", "name": "size"},)).validate()
    with pytest.raises(ConfigError, match=r"unknown model spec field\(s\) encoders"):
        ModelSpec.from_dict({**_spec().to_dict(), "encoders": ["vgg16"]})
    with pytest.raises(ConfigError, match=r"head 'mask' \(binary_mask\) needs a decoder"):
        ModelSpec("mobilenetv2", (SIZE, SIZE, 1), ({"type": "binary_mask", "name": "mask"},), decoder=None).validate()


def test_classification_model_has_no_decoder():
    model = build_model_from_spec(_spec(task="classification"), weights=None)
    assert model.output_names == ["label"]
    assert not [layer for layer in model.layers if layer.name.startswith("decoder_")]


def test_model_of_a_plain_functional_file_gets_the_unet_spec(tiny_model_file):
    # best.keras files written before specs existed hold a plain functional model
    legacy = keras.saving.load_model(tiny_model_file)
    legacy = keras.Model(legacy.inputs, dict(zip(legacy.output_names, legacy.outputs)), name=legacy.name)
    spec = model_spec(legacy)
    assert spec.encoder == "mobilenetv2" and spec.decoder == "unet"
    assert [head["type"] for head in spec.heads] == ["classification", "binary_mask"]
    assert gradcam_layer(legacy, "mask") == "decoder_stage4_conv2_relu"


def test_class_head_can_pool_several_levels():
    spec = _spec(task="classification")
    spec.heads = ({**spec.heads[0], "levels": ["P4", "P5"]},)
    model = build_model_from_spec(spec, weights=None)
    pooled = model.get_layer("label_pool")
    assert isinstance(pooled, keras.layers.Concatenate)
    assert pooled.output.shape[-1] == sum(model.get_layer("encoder").output[level].shape[-1] for level in ("P4", "P5"))


def _depth4_encoder(include_top, weights, input_shape):
    features = inputs = keras.Input(input_shape)
    for level in range(1, 5):
        features = keras.layers.Conv2D(4 * level, 3, strides=2, padding="same", name=f"depth4_p{level}")(features)
    return keras.Model(inputs, features, name="depth4")


@pytest.mark.parametrize("decoder", list(DECODERS))
def test_an_encoder_of_depth_4_gets_its_bottleneck_at_stride_16_and_four_decoder_stages(decoder, monkeypatch):
    # the ResFormer's pyramid: four levels, the deepest at 1/16
    monkeypatch.setitem(ENCODERS, "depth4", ApplicationEncoder(
        "depth4", "tf", imagenet_weights=False, depth=4, constructor=_depth4_encoder,
        pyramid_layers=tuple(f"depth4_p{level}" for level in range(1, 5))))
    spec = _spec(encoder="depth4", decoder=decoder)
    assert spec.heads[0]["levels"] == ["P4"]
    model = build_model_from_spec(spec, weights=None)
    assert model.get_layer("bottleneck").output.shape[1:] == (SIZE // 16, SIZE // 16, 16)
    # every decoder's stage has a first conv block (the U-Net's have a second one, the ResFormer's not)
    stages = sorted(layer.name for layer in model.layers if layer.name.endswith("_conv1_relu"))
    assert stages == [f"decoder_stage{stage}_conv1_relu" for stage in range(2, 6)]
    for stage, (level, filters) in zip(range(2, 5), [("P3", 16), ("P2", 8), ("P1", 8)]):
        assert model.get_layer(f"decoder_stage{stage}_concat").input[1].shape == \
            model.get_layer("encoder").output[level].shape
        assert model.get_layer(f"decoder_stage{stage}_conv1_relu").output.shape[-1] == filters
    outputs = model.predict(np.zeros((1, SIZE, SIZE, 1), "float32"), verbose=0)
    assert outputs["label"].shape == (1, NUM_CLASSES) and outputs["mask"].shape == (1, SIZE, SIZE, 1)
    assert gradcam_layer(model, "label") == "depth4_p3"  # the 4 x 4 bottleneck is under 7 cells, P3 is 8 x 8
    spec.heads = ({**spec.heads[0], "levels": ["P4", "P5"]}, spec.heads[1])
    with pytest.raises(ConfigError, match=r"^head 'label' pools level\(s\) P5, which encoder 'depth4' does not "
                                          r"have; expected some of P1, P2, P3, P4$"):
        spec.validate()


# === Attention U-Net ===

def _gate_model(channels=6):
    skip, gating = keras.Input((8, 8, channels)), keras.Input((4, 4, 10))
    return keras.Model([skip, gating], apply_attention_gate(skip, gating, name="gate"))


def test_attention_gate_keeps_the_skips_shape_and_exposes_its_coefficients():
    gate = _gate_model()
    assert gate.output.shape == (None, 8, 8, 6)
    assert gate.get_layer("gate_attention").output.shape == (None, 4, 4, 1)
    assert gate.get_layer("gate_theta").output.shape == (None, 4, 4, 3)


def test_attention_gate_multiplies_the_skip_by_its_coefficients():
    gate = _gate_model()
    rng = np.random.default_rng(0)
    skip, gating = rng.normal(size=(2, 8, 8, 6)).astype("float32"), rng.normal(size=(2, 4, 4, 10)).astype("float32")
    coefficients = keras.Model(gate.inputs, gate.get_layer("gate_attention").output).predict([skip, gating], verbose=0)
    assert ((coefficients > 0) & (coefficients < 1)).all()
    resampled = tf.image.resize(coefficients, (8, 8), method="bilinear").numpy()
    np.testing.assert_allclose(gate.predict([skip, gating], verbose=0), skip * resampled, rtol=1e-5, atol=1e-6)


def _attention_decoder():
    """The attention_unet decoder alone, on inputs P1..P5 of a 64 px image with 4 channels each."""
    features = {f"P{level}": keras.Input((SIZE // 2 ** level, SIZE // 2 ** level, 4), name=f"P{level}")
                for level in range(1, 6)}
    skips = {level: features[level] for level in ("P1", "P2", "P3", "P4")}
    output = DECODERS.get("attention_unet").apply(features, skips, DECODER_FILTERS, False)
    return keras.Model(list(features.values()), output)


def test_closed_gates_remove_the_skips():
    decoder = _attention_decoder()
    assert [layer.name for layer in decoder.layers if layer.name.endswith("_gate_attention")] == [
        f"decoder_stage{stage}_gate_attention" for stage in range(1, 5)]
    rng = np.random.default_rng(0)
    features = [rng.normal(size=(1, *tensor.shape[1:])).astype("float32") for tensor in decoder.inputs]
    other_skips = [rng.normal(size=array.shape).astype("float32") for array in features[:4]] + features[4:]
    # an open gate lets the skip through
    assert not np.allclose(decoder.predict(features, verbose=0), decoder.predict(other_skips, verbose=0))
    for layer in decoder.layers:  # every gate's coefficients to 0: psi's kernel 0, its bias very negative
        if layer.name.endswith("_gate_psi"):
            kernel, bias = layer.get_weights()
            layer.set_weights([np.zeros_like(kernel), np.full_like(bias, -1e4)])
    # the output then depends on the bottleneck alone
    np.testing.assert_array_equal(decoder.predict(features, verbose=0), decoder.predict(other_skips, verbose=0))


def test_decoder_maps_are_the_gates_coefficients_at_the_image_size():
    model = build_model_from_spec(_spec(architecture="attention_unet"), weights=None)
    gates = [f"decoder_stage{stage}_gate_attention" for stage in range(1, 5)]
    assert explained_layers(model) == gates
    assert explained_layers(build_model_from_spec(_spec(), weights=None)) == []
    images = np.random.default_rng(0).uniform(0, 255, size=(2, SIZE, SIZE, 1)).astype("float32")
    maps = DecoderMaps(model)(images)
    assert list(maps) == gates and [maps[name].stride for name in gates] == [32, 16, 8, 4]
    coefficients = keras.Model(model.input, model.get_layer(gates[2]).output).predict(images, verbose=0)
    expected = tf.image.resize(coefficients, (SIZE, SIZE), method="bilinear").numpy()[..., 0]
    assert maps[gates[2]].values.shape == (2, SIZE, SIZE)
    np.testing.assert_allclose(maps[gates[2]].values, expected, rtol=1e-5, atol=1e-6)
    assert DecoderMaps(build_model_from_spec(_spec(), weights=None))(images) == {}


def test_build_model_keeps_todays_arguments_and_adds_the_architecture():
    model = mtunet.build_model("mobilenetv2", architecture="attention_unet", input_shape=(SIZE, SIZE, 3),
                               num_classes=2, weights=None, decoder_filters=DECODER_FILTERS)
    assert model.name == "attention_unet_mobilenetv2_multi" and model.spec.preset == "attention_unet"
    assert mtunet.build_model("vgg16", input_shape=(SIZE, SIZE, 3), num_classes=2, weights=None,
                              decoder_filters=DECODER_FILTERS).name == "mtunet_vgg16_multi"
