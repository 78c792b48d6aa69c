"""Ordinal grades: CORAL's loss, decision and rank consistency against hand computations, the ordinal head's config,
training, reloading and Grad-CAM, and the grade metrics (QWK, referable AUC) against scikit-learn."""

import types

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from sklearn import metrics as sk_metrics

from mtunet.data.targets import MISSING_CLASS, TargetHead
from mtunet.evaluation.heads import head_metrics, referable_grade
from mtunet.explain.gradcam import GradCam
from mtunet.models import build_model_from_spec, load_model, make_spec, model_heads
from mtunet.models.heads import build_head
from mtunet.models.heads.ordinal import CumulativeToClassProbabilities, OrdinalThresholds
from mtunet.models.losses import OrdinalCrossEntropy
from mtunet.models.metrics import LabelledGradeAccuracy, ordinal_grades
from mtunet.training.config import TrainConfig
from mtunet.training.loop import compile_model, target_head_configs

SIZE = 32


def _class_probabilities(exceeding):
    """Class probabilities ``(n, K)`` from ``P(y > k)`` ``(n, K - 1)``."""
    exceeding = np.asarray(exceeding, "float64")
    ones, zeros = np.ones((len(exceeding), 1)), np.zeros((len(exceeding), 1))
    return np.concatenate([ones, exceeding], axis=1) - np.concatenate([exceeding, zeros], axis=1)


def test_coral_loss_is_the_class_weighted_sum_of_threshold_cross_entropies_over_labelled_examples():
    exceeding = np.array([[0.9, 0.6, 0.2], [0.5, 0.5, 0.5], [0.3, 0.2, 0.1], [0.8, 0.7, 0.4]])
    y_pred = _class_probabilities(exceeding).astype("float32")
    y_true = np.eye(4, dtype="float32")[[2, 0, 0, 3]]
    y_true[1] = 0.0  # the second example has no label
    weights = [1.0, 2.0, 0.5, 3.0]
    above = np.array([[1, 1, 0], [0, 0, 0], [1, 1, 1]])  # grades 2, 0, 3 against the thresholds 0, 1, 2
    labelled = exceeding[[0, 2, 3]]
    per_example = -(above * np.log(labelled) + (1 - above) * np.log(1 - labelled)).sum(axis=1)
    expected = (per_example * np.array([weights[2], weights[0], weights[3]])).mean()
    loss = OrdinalCrossEntropy(weights)(y_true, y_pred)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(OrdinalCrossEntropy()(y_true, y_pred)) == pytest.approx(per_example.mean(), rel=1e-5)
    assert float(OrdinalCrossEntropy(weights)(np.zeros_like(y_true), y_pred)) == 0.0
    restored = OrdinalCrossEntropy.from_config(OrdinalCrossEntropy(weights).get_config())
    assert float(restored(y_true, y_pred)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("exceeding, grade", [
    ([0.9, 0.6, 0.4, 0.1], 2),    # probabilities (0.1, 0.3, 0.2, 0.3, 0.1): the argmax would say 1
    ([0.4, 0.3, 0.2, 0.1], 0),
    ([0.99, 0.98, 0.97, 0.6], 4),
    ([0.7, 0.45, 0.3, 0.2], 1),
])
def test_the_grade_is_the_number_of_thresholds_exceeded_with_probability_above_one_half(exceeding, grade):
    probabilities = _class_probabilities([exceeding]).astype("float32")
    head = build_head({"type": "ordinal", "name": "grade", "num_classes": 5})
    assert head.predict_numpy(probabilities).tolist() == [grade]
    served = head.serving_outputs(probabilities)
    assert keras.ops.convert_to_numpy(served["grade"]).tolist() == [grade]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(served["grade_probabilities"]), probabilities)
    assert keras.ops.convert_to_numpy(ordinal_grades(probabilities)).tolist() == [grade]


def test_grade_accuracy_counts_the_coral_decision_of_labelled_examples():
    probabilities = _class_probabilities([[0.9, 0.6, 0.4, 0.1], [0.4, 0.3, 0.2, 0.1], [0.9, 0.8, 0.7, 0.6]])
    y_true = np.eye(5, dtype="float32")[[2, 1, 0]]
    y_true[2] = 0.0
    accuracy = LabelledGradeAccuracy()
    accuracy.update_state(y_true, probabilities.astype("float32"))
    assert float(accuracy.result()) == pytest.approx(0.5)  # grade 2 right, grade 1 predicted 0; the third unlabelled


def test_class_probabilities_are_rank_consistent_for_any_weights():
    rng = np.random.default_rng(0)
    thresholds = OrdinalThresholds(5)
    thresholds.build((None, 1))
    assert keras.ops.convert_to_numpy(CumulativeToClassProbabilities()(thresholds(np.zeros((1, 1), "float32")))) == \
        pytest.approx(np.full((1, 6), 1 / 6), abs=1e-6)  # the initial biases: every grade equally likely
    for _ in range(5):
        thresholds.set_weights([rng.normal(0, 3, (1,)).astype("float32"), rng.normal(0, 3, (4,)).astype("float32")])
        scores = rng.normal(0, 5, (64, 1)).astype("float32")
        logits = keras.ops.convert_to_numpy(thresholds(scores))
        assert (np.diff(logits, axis=1) < 0).all()
        probabilities = keras.ops.convert_to_numpy(CumulativeToClassProbabilities()(logits))
        assert probabilities.shape == (64, 6) and probabilities.min() >= 0.0
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
        np.testing.assert_allclose(np.cumsum(probabilities[:, ::-1], axis=1)[:, ::-1][:, 1:],
                                   1 / (1 + np.exp(-logits)), atol=1e-6)


@pytest.fixture(scope="module")
def graded():
    """A classification model at 32 px with an ordinal head of 5 grades on the bottleneck."""
    keras.utils.set_random_seed(0)
    spec = make_spec("unet", encoder="mobilenetv2", input_shape=(SIZE, SIZE, 3), num_classes=2, task="classification",
                     extra_heads=[{"type": "ordinal", "name": "grade", "num_classes": 5, "hidden_units": 8}])
    return build_model_from_spec(spec, weights=None)


def test_ordinal_head_config_round_trips_and_names_its_layers(graded):
    head = model_heads(graded)["grade"]
    config = head.get_config()
    assert config == {"type": "ordinal", "name": "grade", "num_classes": 5, "dropout": 0.3, "levels": ["P5"],
                      "hidden_units": 8}
    assert build_head(config).get_config() == config
    assert graded.get_layer("grade_score").output.shape == (None, 1)
    assert graded.get_layer(head.logits_layer).output.shape == (None, 4)
    assert graded.get_layer("grade").output.shape == (None, 5)


def test_ordinal_head_trains_with_missing_grades_reloads_identically_and_explains(graded, tmp_path):
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (8, SIZE, SIZE, 3)).astype("float32")
    grades = np.eye(5, dtype="float32")[rng.integers(0, 5, 8)]
    grades[::3] = 0.0  # missing grades
    targets = {"label": np.eye(2, dtype="float32")[rng.integers(0, 2, 8)], "grade": grades}
    compile_model(graded, TrainConfig(learning_rate=1e-3), {"grade": [1.0, 2.0, 1.0, 0.5, 3.0]})
    before = graded.get_layer("grade_logits").get_weights()
    for _ in range(3):
        losses = graded.train_on_batch(images, targets, return_dict=True)
    assert all(np.isfinite(value) for value in losses.values())
    after = graded.get_layer("grade_logits").get_weights()
    assert not all(np.array_equal(old, new) for old, new in zip(before, after))
    graded.save(tmp_path / "graded.keras")
    reloaded = load_model(tmp_path / "graded.keras")
    expected = graded.predict(images, verbose=0)["grade"]
    np.testing.assert_array_equal(reloaded.predict(images, verbose=0)["grade"], expected)
    assert (expected >= 0).all() and np.allclose(expected.sum(axis=1), 1.0, atol=1e-6)
    heatmaps = GradCam(reloaded, head="grade")(images[:2]).heatmaps
    assert heatmaps.shape == (2, SIZE, SIZE) and np.isfinite(heatmaps).all()


def test_ordinal_targets_get_an_ordinal_head_with_coral_and_a_class_head_with_softmax():
    info = types.SimpleNamespace(target_heads=(TargetHead("grade", "ordinal", ("grade",), ("0", "1", "2")),
                                               TargetHead("site", "categorical", ("site",), ("a", "b"))))
    assert [config["type"] for config in target_head_configs(info, {}, "coral")] == ["ordinal", "classification"]
    assert [config["type"] for config in target_head_configs(info, {})] == ["classification", "classification"]


def test_ordinal_loss_is_a_training_option_of_the_command_line(monkeypatch):
    import cli
    import mtunet.training.loop

    received = {}

    def fake_training(config=None, **options):
        received["config"] = config
        return types.SimpleNamespace(best_metrics={}, best_epoch=1, directory="run")

    monkeypatch.setattr(mtunet.training.loop, "train", fake_training)
    result = CliRunner().invoke(cli.main, ["train", "--ordinal-loss", "coral", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert received["config"].ordinal_loss == "coral"
    result = CliRunner().invoke(cli.main, ["train", "--ordinal-loss", "cumulative"])
    assert result.exit_code == 2 and "'cumulative' is not one of 'softmax', 'coral'" in result.output


def _graded_predictions():
    """Predictions of an ordinal head of 5 grades for 12 images of 6 patients, one grade missing; the CORAL decision
    differs from the argmax for the first image."""
    exceeding = np.array([[0.9, 0.6, 0.4, 0.1], [0.2, 0.1, 0.05, 0.01], [0.8, 0.3, 0.1, 0.05],
                          [0.95, 0.9, 0.3, 0.1], [0.99, 0.9, 0.8, 0.2], [0.99, 0.95, 0.9, 0.7],
                          [0.6, 0.2, 0.1, 0.0], [0.3, 0.1, 0.0, 0.0], [0.9, 0.7, 0.6, 0.1],
                          [0.97, 0.8, 0.7, 0.6], [0.85, 0.55, 0.2, 0.1], [0.5, 0.4, 0.3, 0.2]])
    probabilities = _class_probabilities(exceeding)
    head = build_head({"type": "ordinal", "name": "grade", "num_classes": 5})
    return {"true_grade": np.array([2, 0, 1, 2, 3, 4, 1, 0, 3, 4, 1, MISSING_CLASS]),
            "grade_probabilities": probabilities, "grade_predicted": head.predict_numpy(probabilities),
            "grade_decision": np.asarray(head.decision), "grade_kind": np.asarray("ordinal"),
            "grade_class_names": np.asarray(["0", "1", "2", "3", "4"]),
            "groups": np.repeat([f"p{index}" for index in range(6)], 2)}


def test_ordinal_heads_are_evaluated_as_grades_as_sklearn_computes_them():
    predictions = _graded_predictions()
    figures = head_metrics(predictions, resamples=200)["grade"]
    labelled = predictions["true_grade"] != MISSING_CLASS
    true, predicted = predictions["true_grade"][labelled], predictions["grade_predicted"][labelled]
    probabilities = predictions["grade_probabilities"][labelled]
    assert predicted[0] == 2 and probabilities[0].argmax() != 2
    assert figures["kind"] == "ordinal" and figures["n"] == 11 and figures["missing"] == 1
    assert figures["qwk"] == pytest.approx(sk_metrics.cohen_kappa_score(true, predicted, weights="quadratic"))
    disagreement = (np.arange(5)[:, None] - np.arange(5)[None, :]) ** 2
    observed = sk_metrics.confusion_matrix(true, predicted, labels=range(5))
    chance = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    assert figures["qwk"] == pytest.approx(1 - (disagreement * observed).sum() / (disagreement * chance).sum())
    assert figures["confusion_matrix"] == observed.tolist()
    assert figures["accuracy"] == pytest.approx(np.mean(true == predicted))
    assert figures["sensitivity"] == pytest.approx(
        {str(grade): np.mean(predicted[true == grade] == grade) for grade in range(5)})
    assert referable_grade(5) == 2 and figures["referable_grade"] == "2"
    assert figures["referable_auc"] == pytest.approx(sk_metrics.roc_auc_score(true >= 2, probabilities[:, 2:].sum(1)))
    assert figures["decision"] == "the number of thresholds k with P(y > k) > 0.5 (CORAL's rule)"
    intervals = figures["confidence_intervals"]
    for key in ("qwk", "accuracy", "referable_auc"):
        assert intervals[key]["low"] <= figures[key] <= intervals[key]["high"], key
    assert set(intervals["sensitivity"]) == {"0", "1", "2", "3", "4"}
    categorical = dict(predictions, grade_kind=np.asarray("categorical"))
    assert head_metrics(categorical, resamples=20)["grade"]["kind"] == "classification"
