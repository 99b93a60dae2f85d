"""Real photos: align a face onto the generator's crop, the image → latent encoder, inversion by optimisation, and
editing an inverted photo along a fitted direction."""
