"""Curves against the epoch, as a PNG: the one plotter of the project.

Training draws its run's loss and error after each epoch
(``training.extensions``), ``compare.py report`` every seed's test error
(``results.report``), ``analyze.py curves`` several runs' loss and error side
by side (``results.analysis``); each says what to draw as :class:`Line` s in
panels, and :func:`plot_curves` draws and writes it.
"""
import collections

from chainer_cifar.data.pickles import atomic_write

# style: a matplotlib format string ('-', ':', '.-', 'o' for dots); color: None (the next of the
# colour cycle) or one of it by number ('C0', 'C1', ...), so two panels can give a run one colour.
Line = collections.namedtuple('Line', 'epochs values label style color', defaults=(None, '-', None))
# ylabel: the panel's axis; lines: its Line s.
Panel = collections.namedtuple('Panel', 'ylabel lines')


def plot_curves(path, panels, size=(6, 4), title=None):
    """Draw ``panels`` side by side (each ``size`` inches) and write ``path`` as a PNG.

    A value of None is a gap in its line. The file is written through a
    temporary one, so a reader never sees half an image. Needs matplotlib
    (ImportError without it).
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    fig, axes = plt.subplots(1, len(panels), figsize=(size[0] * len(panels), size[1]), squeeze=False)
    try:
        for ax, panel in zip(axes[0], panels):
            for line in panel.lines:
                values = [float('nan') if v is None else v for v in line.values]
                ax.plot(line.epochs, values, line.style, color=line.color, label=line.label, lw=1)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel('epoch')
            ax.set_ylabel(panel.ylabel)
            ax.grid(alpha=0.3)
            if any(line.label for line in panel.lines):
                ax.legend(fontsize=8)
        if title:
            fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=100))
    finally:
        plt.close(fig)
    return path
