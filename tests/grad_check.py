"""The gradients a swapped convolution must reproduce: shared by the tests of geocli.runtime.blocked_conv
and geocli.runtime.pointwise_conv."""


def input_and_weight_gradients(net, x, r):
    """Gradients of ``sum(net(x) * r)`` (a random projection of the output) with respect to ``x`` and to each
    trainable parameter of ``net``, as NumPy arrays: ``[dx, dw1, dw2, ...]``."""
    import mindspore as ms

    def projected(inp):
        return (net(inp) * r).sum()

    dx, dw = ms.jit(ms.grad(projected, grad_position=0, weights=net.trainable_params()))(x)
    return [dx.asnumpy()] + [g.asnumpy() for g in dw]
