"""Unsupervised direction discovery by a deformator / reconstructor pair: Voynov & Babenko, "Unsupervised Discovery
of Interpretable Directions in the GAN Latent Space" (ICML 2020); Lu, Lee, Tseng & Yang, "Unsupervised Discovery of
Disentangled Manifolds in GANs" (2020).

- :mod:`~stages.plugins.methods.unsupervised.deformator`: A, direction codes e_k·ε → latent shifts (linear, orthonormal,
fc).
- :mod:`~stages.plugins.methods.unsupervised.reconstructor`: R, image pair → direction logits and ε (LeNet, ResNet-18).
- :mod:`~stages.plugins.methods.unsupervised.training`: the resumable joint training loop, the shared params model and
the
  centroid loss.
- :mod:`~stages.plugins.methods.unsupervised.metrics`: reconstructor classification accuracy (RCA) and a generic LPIPS
perceptual
  path length along latent directions.

The fitting methods built on them are ``stages.plugins.methods.voynov`` and ``stages.plugins.methods.centroid``.
"""
