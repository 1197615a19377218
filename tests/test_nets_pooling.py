"""geocli.nets.pooling.MaxPool2d: same outputs and gradients as MindSpore's own max-pool at every size
GoogLeNet and VGG use ('same' padding with the odd pixel at the bottom/right, stride 1 and 2, odd and
even inputs; 'valid'), also where ReLU zeros tie inside a window, and on non-square inputs (7x8 at stride 2
has no exact argmax form and must keep the plain pool); eval mode is the plain pool."""

import numpy as np
import pytest

CASES = [((7, 8), 3, 2, "same"), ((8, 16), 3, 2, "same"), ((9, 5), 3, 1, "same"), (112, 3, 2, "same"), (56, 3, 2, "same"), (28, 3, 1, "same"), (7, 3, 2, "same"), (7, 2, 2, "same"), (7, 3, 1, "same"),
         (8, 2, 2, "same"), (4, 3, 2, "same"), (2, 3, 1, "same"), (32, 2, 2, "valid"), (15, 3, 2, "valid"),
         ((66, 34), 3, 2, "valid"), (15, 1, 2, "valid"), ((8, 9), 1, 2, "valid")]


def _grad(cell):
    import mindspore as ms

    def loss(x, w):
        return (cell(x) * w).sum()

    return ms.jit(ms.grad(loss))


@pytest.mark.parametrize("size,kernel,stride,pad_mode", CASES)
def test_outputs_and_gradients_equal_mindspores_pool(size, kernel, stride, pad_mode):
    import mindspore as ms
    from mindspore import nn

    from geocli.nets.pooling import MaxPool2d

    rng = np.random.default_rng(sum(np.atleast_1d(size)) * 10 + kernel + stride)
    height, width = size if isinstance(size, tuple) else (size, size)
    x = rng.standard_normal((2, 3, height, width)).astype(np.float32)
    x[0] = np.maximum(x[0], 0.0)  # ReLU zeros: ties inside windows
    reference, ours = nn.MaxPool2d(kernel, stride, pad_mode=pad_mode), MaxPool2d(kernel, stride, pad_mode)
    reference.set_train(True)
    ours.set_train(True)
    expected = reference(ms.Tensor(x)).asnumpy()
    np.testing.assert_array_equal(ours(ms.Tensor(x)).asnumpy(), expected)
    w = ms.Tensor(rng.standard_normal(expected.shape).astype(np.float32))
    np.testing.assert_array_equal(_grad(ours)(ms.Tensor(x), w).asnumpy(), _grad(reference)(ms.Tensor(x), w).asnumpy())
    ours.set_train(False)
    np.testing.assert_array_equal(ours(ms.Tensor(x)).asnumpy(), expected)


def test_same_padding_puts_the_odd_pixel_after():
    from geocli.nets.pooling import same_padding

    assert same_padding(112, 3, 2) == (0, 1)
    assert same_padding(7, 3, 2) == (1, 1)
    assert same_padding(28, 3, 1) == (1, 1)
    assert same_padding(8, 2, 2) == (0, 0)
