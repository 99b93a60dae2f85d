"""The explorer's engine (``latentatlas explore``): open a finished run and turn an edit state into pixels and scores.

- :mod:`stages.explore.state`: what the page shows, as a value (start image, slider positions, held attributes, W+
  layers, truncation, compare mode) and as the URL query that restores it;
- :mod:`stages.explore.catalog`: every direction set of the run as sliders, grouped by attribute;
- :mod:`stages.explore.engine`: the run's generator, labelers and sliders; an edit state → latent → image → scores;
- :mod:`stages.explore.photos`: uploaded photos checked, aligned and inverted (a cancellable job with progress);
- :mod:`stages.explore.exports`: the image, a strip of α steps, an animated traversal, the latent.

Nothing here knows about HTTP: the web app (:mod:`pipeline.explore`) only parses requests and calls these.
"""
