"""The PyTorch control's ResNet weights in the Chainer model (a measurement helper, not part of the package).

The two networks are the same up to a renumbering of channels: Chainer's
option-A shortcut puts the new zero channels in front ([0, x], as the original
chainer-cifar does), the control pads both sides ([0, x, 0], as the common
PyTorch reproductions do). :func:`copy_into_chainer` renumbers the control's
weights and BatchNorm statistics into a Chainer ``ResNet`` of the same depth;
:func:`mapped` pairs every Chainer array with its PyTorch tensor, so the two can
be compared. Used by ``tests/test_torch_control.py`` and ``tools/lockstep.py``.
"""
import numpy

from chainer_cifar.models.blocks import three_stage_plan  # first: the package's compat layer before Chainer

import chainer  # noqa: E402


def stream_permutations(n):
    """Per block ``(in, out)``: the control's channel c of the residual stream is Chainer's channel ``perm[c]``.

    Chainer's option-A shortcut puts the new zero channels in front ([0, x]); the
    control pads both sides ([0, x, 0]). Both are the same network once each
    transition's output channels are renumbered: x's channel k sits at ``p + k``
    in the control and at ``m + perm_in[k]`` in Chainer, and the zero channels
    take Chainer's first ``m`` in order.
    """
    perm, plan = numpy.arange(16), []
    for cin, cout, _ in three_stage_plan(n):
        out = perm
        if cout != cin:
            p, m = cout // 4, cout - cin
            out = numpy.empty(cout, dtype=int)
            out[numpy.r_[0:p, p + cin:cout]] = numpy.arange(m)
            out[p:p + cin] = m + perm
        plan.append((perm, out))
        perm = out
    return plan


def paired(tmodel, cmodel, n):
    """``[(chainer link, torch module, out channels, in channels)]`` for every conv, BN and the fc.

    The control's output channel c of a layer is Chainer's ``out[c]``, its input channel d Chainer's ``in[d]``.
    """
    same = numpy.arange
    pairs = [(cmodel.bconv1.conv, tmodel.conv1, same(16), same(3)), (cmodel.bconv1.bn, tmodel.bn1, same(16), None)]
    tblocks = [b for stage in (tmodel.layer1, tmodel.layer2, tmodel.layer3) for b in stage]
    plan = stream_permutations(n)
    for i, (tb, (pin, pout)) in enumerate(zip(tblocks, plan)):
        cb, width = cmodel['res{}'.format(i + 1)], len(pout)
        pairs += [(cb.conv1, tb.conv1, same(width), pin), (cb.bn1, tb.bn1, same(width), None),
                  (cb.conv2, tb.conv2, pout, same(width)), (cb.bn2, tb.bn2, pout, None)]
    pairs.append((cmodel['fc{}'.format(3 * n + 2)], tmodel.fc, same(10), plan[-1][1]))
    return pairs


def mapped(pairs, buffers=False):
    """``[(name, Chainer array holder, torch tensor, index)]``: parameters, or the BN statistics."""
    rows = []
    for clink, tmod, out, in_ in pairs:
        if hasattr(clink, 'gamma'):
            names = (('avg_mean', 'running_mean'), ('avg_var', 'running_var')) if buffers else \
                (('gamma', 'weight'), ('beta', 'bias'))
        else:
            names = () if buffers else (('W', 'weight'), ('b', 'bias'))
        for cname, tname in names:
            if getattr(clink, cname, None) is None:
                continue
            index = numpy.ix_(out, in_) if cname == 'W' else out
            rows.append((clink.name + '/' + cname, clink, cname, getattr(tmod, tname), index))
    return rows


def carray(clink, cname):
    a = getattr(clink, cname)
    return a.array if isinstance(a, chainer.Variable) else a


def copy_into_chainer(tmodel, cmodel, n):
    """The control's weights and BN statistics, renumbered, into the Chainer model; returns the pairs."""
    pairs = paired(tmodel, cmodel, n)
    for _, clink, cname, t, index in mapped(pairs) + mapped(pairs, buffers=True):
        a = carray(clink, cname)
        assert a.shape == tuple(t.shape)
        a[index] = t.detach().numpy()
    return pairs
