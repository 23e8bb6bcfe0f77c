"""``-g``: the device a run computes on, and the name of the hardware behind it (for the run record)."""
import platform

import numpy

import chainer

from chainer_cifar.errors import UserError


def get_device(gpu):
    """``-g``: a negative id is the CPU; a GPU needs CuPy and a CUDA driver that can reach it.

    Every way of failing is one :class:`UserError` naming the cause, so that a
    missing CuPy, a machine without a (recent enough) driver and a wrong id all
    end in one line instead of a traceback from inside CuPy.
    """
    if gpu < 0:
        return chainer.get_device('@numpy')
    cuda = chainer.backends.cuda
    if not cuda.available:
        why = getattr(cuda, '_resolution_error', None)
        raise UserError('-g {} asks for a GPU, but CuPy is not installed or cannot be imported{}; '
                        'use -g -1 to run on the CPU'.format(gpu, ' ({})'.format(_one_line(why)) if why else ''))
    import cupy
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError, whose module moves between CuPy versions
        raise UserError('-g {} asks for a GPU, but CUDA cannot reach one ({}); '
                        'use -g -1 to run on the CPU'.format(gpu, _one_line(e)))
    if count == 0:
        raise UserError('-g {} asks for a GPU, but CUDA sees none; use -g -1 to run on the CPU'.format(gpu))
    if gpu >= count:
        raise UserError('-g {}: there is no such GPU ({} found; ids 0-{})'.format(gpu, count, count - 1))
    return chainer.get_device('@cupy:{}'.format(gpu))


def _one_line(error):
    text = ' '.join(str(error).split())
    return '{}: {}'.format(type(error).__name__, text) if text else type(error).__name__


def device_name(device):
    """The hardware behind ``device``: the GPU's name, or the CPU's model name (None if unknown)."""
    try:
        if device.xp is not numpy:
            name = device.xp.cuda.runtime.getDeviceProperties(device.device.id)['name']
            return name.decode() if isinstance(name, bytes) else str(name)
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except Exception:  # a record without the name is still a record
        return None
    return platform.processor() or None
