"""Stage 4, samples -> numbers.

    metrics.py    small-data metrics in a frozen classifier's features: FD-cls, KID, precision /
                  recall, conditional accuracy, floors, memorisation
    inception.py  the FID Inception-v3 (a port of the TensorFlow graph, no torchvision)
    fid.py        the ImageNet protocol: FID / IS / precision / recall of an npz, reconstructions
"""
