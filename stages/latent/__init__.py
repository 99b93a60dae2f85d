"""Shared latent operations: the directions format and published sets, editing along directions (vectors, gradient
paths of nonlinear fields, conditional, W+ layers), the seeded random streams, perceptual path length and LPIPS."""
