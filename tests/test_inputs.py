"""Input sources: the arrays every backend gets, and SPEC errors that say how to fix the data."""

import numpy as np
import pytest
from PIL import Image

from pytest_rknn.errors import SpecError
from pytest_rknn.inputs import prepare_inputs
from pytest_rknn.onnx_model import read_model_info
from pytest_rknn.spec import load_spec

from conftest import IMAGES, write_spec


def inputs_of(folder, text, model="cnn.onnx"):
    spec = load_spec(write_spec(folder, "m", f"model: {model}\n" + text))
    return prepare_inputs(spec, read_model_info(spec.model_path))


def test_images_are_resized_to_the_model_input_and_stay_nhwc_uint8(workdir):
    inputs = inputs_of(workdir, f"inputs:\n  images: {{images: '{IMAGES}/*.png', limit: 3}}\n")
    assert len(inputs) == 3 and inputs.layouts == ["nhwc"]
    array = inputs.samples[0][0]
    assert array.shape == (1, 32, 32, 3) and array.dtype == np.uint8
    assert inputs.labels[:2] == ["img_00.png", "img_01.png"]


def test_nchw_bgr_float_images(workdir):
    rgb = inputs_of(workdir, f"inputs:\n  images: {{images: '{IMAGES}/img_00.png', layout: nchw, dtype: float32}}\n")
    bgr = inputs_of(workdir, f"inputs:\n  images: {{images: '{IMAGES}/img_00.png', layout: nchw, color: bgr}}\n")
    a, b = rgb.samples[0][0], bgr.samples[0][0]
    assert a.shape == (1, 3, 32, 32) and a.dtype == np.float32 and rgb.layouts == ["nchw"]
    np.testing.assert_array_equal(a[:, ::-1].astype(np.uint8), b)


def test_letterbox_keeps_the_aspect_ratio_and_pads(tmp_path, workdir):
    Image.new("RGB", (64, 32), (200, 10, 10)).save(tmp_path / "wide.png")
    inputs = inputs_of(workdir, f"inputs:\n  images: {{images: '{tmp_path}/wide.png', letterbox: 32, pad: 114}}\n")
    array = inputs.samples[0][0][0]
    assert array.shape == (32, 32, 3)
    assert tuple(array[0, 0]) == (114, 114, 114)  # padding above the 32x16 picture
    assert tuple(array[16, 16]) == (200, 10, 10)


def test_random_inputs_are_seeded_and_ranged(workdir):
    text = "inputs:\n  images: {random: [0, 255], count: 2, seed: 7}\n"
    first, again = inputs_of(workdir, text), inputs_of(workdir, text)
    other = inputs_of(workdir, text.replace("seed: 7", "seed: 8"))
    assert len(first) == 2
    np.testing.assert_array_equal(first.samples[1][0], again.samples[1][0])  # the same seed, the same data
    for sample in range(2):  # another seed, other data: the seed is really used
        assert not np.array_equal(first.samples[sample][0], other.samples[sample][0])
    assert first.samples[0][0].min() >= 0 and first.samples[0][0].max() < 255
    assert not np.array_equal(first.samples[0][0], first.samples[1][0])


def test_integer_random_ranges_include_both_ends(workdir):
    both = inputs_of(workdir, "inputs:\n  keypoints: {random: [0, 1]}\n", model="two_input.onnx")
    keypoints = both.samples[0][0]
    assert keypoints.dtype == np.int64 and set(np.unique(keypoints).tolist()) == {0, 1}  # 128 values
    single = inputs_of(workdir, "inputs:\n  keypoints: {random: [3, 3]}\n", model="two_input.onnx")
    assert single.samples[0][0].shape == (1, 64, 2) and (single.samples[0][0] == 3).all()


def test_an_input_with_one_sample_is_shared_by_the_samples_of_the_others(workdir):
    inputs = inputs_of(workdir, "inputs:\n  keypoints: {random: [0, 63], seed: 1}\n"
                                "  descriptors: {random: [-1, 1], count: 3, seed: 2}\n", model="two_input.onnx")
    assert len(inputs) == 3
    keypoints = [sample[0] for sample in inputs.samples]
    descriptors = [sample[1] for sample in inputs.samples]
    assert all(np.array_equal(keypoints[0], k) for k in keypoints[1:])
    assert not np.array_equal(descriptors[0], descriptors[1]) and not np.array_equal(descriptors[1], descriptors[2])
    assert inputs.labels == ["random #0", "random #0 + random #1", "random #0 + random #2"]


def test_multi_input_models_get_their_own_dtypes(workdir):
    inputs = inputs_of(workdir, "", model="two_input.onnx")
    keypoints, descriptors = inputs.samples[0]
    assert keypoints.dtype == np.int64 and keypoints.shape == (1, 64, 2)
    assert descriptors.dtype == np.float32 and descriptors.shape == (1, 64, 256)
    assert inputs.layouts == [None, None]


def test_files_hold_one_sample_or_a_stack(workdir):
    np.save(workdir / "one.npy", np.ones((1, 3, 32, 32), np.float32))
    np.savez(workdir / "many.npz", images=np.zeros((4, 1, 3, 32, 32), np.float64))
    assert len(inputs_of(workdir, "inputs:\n  images: {file: one.npy}\n")) == 1
    many = inputs_of(workdir, "inputs:\n  images: {file: many.npz}\n")
    assert len(many) == 4 and many.samples[3][0].dtype == np.float32  # cast to the model's dtype


def test_every_dynamic_preset_gets_samples(workdir):
    inputs = inputs_of(workdir, "convert: {dynamic_input: [[[1,3,32,32]], [[1,3,48,48]], [[1,3,64,64]]]}\n",
                       model="dynamic.onnx")
    assert [s[0].shape for s in inputs.samples] == [(1, 3, 32, 32), (1, 3, 48, 48), (1, 3, 64, 64)]
    assert inputs.labels[1] == "random 1x3x48x48 #0"


@pytest.mark.parametrize("text, field, words", [
    ("inputs:\n  image: {random: [0, 1]}\n", "inputs.image", "its inputs are: images"),
    ("inputs:\n  images: {random: [0, 1], shape: [1, 3, 30, 30]}\n", "inputs.images", "(1, 3, 32, 32)"),
    ("inputs:\n  images: {images: 'nothing/*.jpg'}\n", "inputs.images.images", "no files match 'nothing/*.jpg'"),
    ("inputs:\n  images: {file: missing.npy}\n", "inputs.images.file", "file not found"),
])
def test_input_mistakes_are_spec_errors(workdir, text, field, words):
    with pytest.raises(SpecError) as info:
        inputs_of(workdir, text)
    assert info.value.field == field and words in info.value.message


def test_a_file_of_the_wrong_shape_names_both_shapes(workdir):
    np.save(workdir / "bad.npy", np.ones((3, 32, 32), np.float32))
    with pytest.raises(SpecError) as info:
        inputs_of(workdir, "inputs:\n  images: {file: bad.npy}\n")
    assert "(3, 32, 32)" in info.value.message and "(1, 3, 32, 32)" in info.value.message


def test_a_dynamic_input_without_shapes_asks_for_presets(workdir):
    with pytest.raises(SpecError) as info:
        inputs_of(workdir, "", model="dynamic.onnx")
    assert "dynamic_input" in info.value.message


def test_inputs_with_different_sample_counts_are_refused(workdir):
    with pytest.raises(SpecError) as info:
        inputs_of(workdir, "inputs:\n  keypoints: {random: [0, 9], count: 2}\n  descriptors: {random: [0, 1], count: 3}\n",
                  model="two_input.onnx")
    assert "'keypoints' gives 2, 'descriptors' gives 3" in info.value.message


def test_float_data_for_an_integer_input_is_refused_unless_it_holds_whole_numbers_in_range(workdir):
    np.save(workdir / "fraction.npy", np.full((1, 64, 2), 1.5, np.float32))
    with pytest.raises(SpecError) as info:
        inputs_of(workdir, "inputs:\n  keypoints: {file: fraction.npy}\n", model="two_input.onnx")
    assert info.value.field == "inputs.keypoints.file"
    assert "fraction.npy (float32) holds values with a fraction (e.g. 1.5), and would be cast to int64 for the " \
           "model input 'keypoints'" in info.value.message
    np.save(workdir / "whole.npy", np.full((1, 64, 2), 7.0, np.float32))
    whole = inputs_of(workdir, "inputs:\n  keypoints: {file: whole.npy}\n", model="two_input.onnx")
    assert whole.samples[0][0].dtype == np.int64 and (whole.samples[0][0] == 7).all()


@pytest.mark.parametrize("text, field, words", [
    ("keypoints: {random: [0, 1], dtype: float32}", "inputs.keypoints",
     "the model input 'keypoints' is int64, and sample 'random #0' (float32) holds values with a fraction"),
    ("keypoints: {random: [0.5, 63]}", "inputs.keypoints.random", "[0.5, 63] for int64 data holds values with a fraction"),
    ("keypoints: {random: [0, 300], dtype: uint8}", "inputs.keypoints.random",
     "holds values from 0 to 300, outside uint8's 0..255"),
    ("keypoints: {file: big.npy, dtype: int8}", "inputs.keypoints.file", "outside int8's -128..127"),
    ("keypoints: {random: [0, 9], layout: nhwc}", "inputs.keypoints.layout",
     "a layout applies only to a 4-D input, and 'keypoints' is (1, 64, 2), so it would do nothing"),
])
def test_data_that_would_be_cast_or_ignored_silently_is_a_spec_error(workdir, text, field, words):
    np.save(workdir / "big.npy", np.full((1, 64, 2), 200, np.int64))
    with pytest.raises(SpecError) as info:
        inputs_of(workdir, f"inputs:\n  {text}\n", model="two_input.onnx")
    assert info.value.field == field and words in info.value.message
